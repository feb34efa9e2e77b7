"""Which state function an event goes to, in this order:

1. a repeat of a message already handled: nothing at all; a Signal message that could not
   be decrypted as its sender's safety number changed: the desk's alert (R6), nothing else;
2. an edit or a forward: never an answer (R3); a live-location edit feeds an open alert;
3. someone who is not a defender (or no longer is, or is hidden after a forced deletion:
   whose alert trigger still raises a silent alert first): a responder's link code
   ("/desk CODE", see ``flows.desk``), an invite code (a desk's, or a trusted contact's),
   else a short "send your code";
4. the alert trigger (command, button or the defender's own code phrase): from any state, the
   alert is raised before anything is asked; after it, nothing else from a Signal chat whose
   safety number changed until the desk has verified it (``frozen``, R6);
5. a roll-call's answer (its button; typed, while the roll-call is the last thing asked and
   no check-in waits for "I'm safe": ``flows.rollcall``), then "I'm safe" (button, /safe or
   code phrase; typed, when a reminder came after the conversation's last step:
   ``flows.checkin.answers_reminder``), help, cancel, menu: from any state;
6. a command or menu button starting another flow;
7. otherwise the current state's function, or the menu when nothing is in progress (but
   cancel, a PIN or the call-off button go to a panic alert still open: ``panic.taken_up``).
   An alert's conversation whose alert the desk has resolved is nothing in progress
   (``panic.over``): whatever comes is answered as if there had been none.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from core import alerts, contacts, live_locations
from core.models import AlertKind, Defender, DefenderStatus, Priority
from core.pins import Verdict
from core.security import CODE_ALPHABET
from core.text import fold, pin
from core.throttle import Throttle
from flows import (
    checkin,
    contact,
    desk,
    help,
    onboarding,
    panic,
    registry,
    report,
    rollcall,
    settings,
    store,
    words,
)
from flows.context import END, Context, Retry
from flows.store import EXPIRED, IDLE

# An invite or contact code, also as read out in two halves: "ABCD EFGH", "abcd-efgh".
# Only a code's own characters (core.security.CODE_ALPHABET: no i, l, o, 0 or 1), so that
# "question" or "good luck" is not taken for one, nor counted as a wrong guess (CODE_TRIES).
_HALF = f"([{CODE_ALPHABET.lower()}]{{4}})"
_CODE = re.compile(rf"(?:/start\s+)?{_HALF}\s*-?\s*{_HALF}")
CODE_TRIES, CODE_WINDOW_S = 10, 3600  # wrong codes a chat may type an hour
T = TypeVar("T")
_COMMAND = re.compile(r"[\s@]")  # "/sos@AmparoBot", "/sos they are here": the command alone


async def handle(event: store.Event) -> None:
    if not await store.mark_seen(event):
        return
    loaded = await store.load(event)
    if event.inbound.key_changed:
        await key_changed(event, loaded)
        return
    ctx = Context(
        event.session,
        event.vault,
        event.now,
        event.inbound,
        loaded.address,
        loaded.defender,
        data=copy.deepcopy(loaded.data),
        pin_checker=_checker(event, loaded),
        since=loaded.row.updated_at if loaded.row is not None else None,
    )
    if loaded.hidden is not None:
        await hidden_alert(ctx, loaded.hidden)
    flow, state = await route(ctx, loaded.flow, loaded.state)
    await follow_live(ctx)
    if not (flow == IDLE or registry.valid(flow, state)):
        raise AssertionError(f"{flow}:{state} is not a state")
    if ctx.forgotten:  # the defender's data was deleted, conversation included
        if loaded.row is not None:
            event.session.expunge(loaded.row)
    else:
        await store.save(
            event,
            loaded,
            ctx.defender,
            flow=flow,
            state=state,
            data=ctx.data,
            ttl=keep_for(flow, ctx.data),
        )
    if ctx.replies or ctx.delete_ids:
        await store.reply(
            event,
            loaded.address,
            store.merge(ctx.replies, ctx.delete_ids),
            priority=ctx.priority,
            recipient="defender" if ctx.defender is not None else None,
        )


async def follow_live(ctx: Context) -> None:
    """Discreet mode: a live location (or its update) has its deletion queued for when it is
    over (``core.live_locations``). After the flows, which may have locked its alert."""
    located, message = ctx.inbound.location, ctx.inbound.chat_message_id
    if ctx.forgotten:  # the defender's data is gone: nothing more is queued for them
        return
    if ctx.discreet and located is not None and located.live and message:
        await live_locations.shared(
            ctx.session, ctx.vault, to=ctx.address, message_id=message, where=located, now=ctx.now
        )


def _checker(
    event: store.Event, loaded: store.Loaded
) -> Callable[[str], Awaitable[Verdict]] | None:
    checker = event.checker
    defender = loaded.defender
    if checker is None or defender is None:
        return None

    async def check(typed: str) -> Verdict:
        return await checker(defender, typed)

    return check


async def route(ctx: Context, flow: str, state: str) -> tuple[str, str]:
    if state == EXPIRED:
        ctx.say(ctx._("Our last conversation was closed after a long silence."))
        flow, state = IDLE, IDLE
    if flow == panic.NAME and await panic.over(ctx):  # resolved by the desk meanwhile
        ctx.data, flow, state = {}, IDLE, IDLE
    late = lapsed(ctx, flow)
    if late:  # the check-in's question is closed, not the report set aside for it
        ctx.say(
            ctx._(
                "The check-in was closed after a long silence: without your PIN, you are not "
                "checked in. Your report is kept: we go on where you left it."
            ),
            sensitive=True,
        )
        flow, state = resume(ctx, ask=False)
    inbound = ctx.inbound
    located = inbound.location
    if pin(inbound.text or "") is not None or (ctx.discreet and located and not located.live):
        # Whatever happens next, not left on screen: a PIN (a late or an edited one too), and
        # in discreet mode a location. Not a live one: deleting its message would stop the
        # sharing the defender just started, and with it the desk's updates of where they are:
        # it goes once over (``follow_live``).
        ctx.forget_message()
    if inbound.edited:
        if flow == report.NAME and state in report.WRITING and inbound.text:
            return await run(ctx, flow, state, handler=report.corrected)  # R3: a new part
        await panic.edited(ctx)
        return flow, state
    if inbound.forwarded:
        ctx.say(ctx._("I don't read forwarded messages. Please type your answer."))
        ctx.ask_again()
        return flow, state
    typed = fold(inbound.text) if inbound.text else ""  # global words are typed, never keys
    if ctx.defender is None and (link := desk.private_code(typed)) is not None:
        if await tried(ctx, desk.link_private(ctx, link)):  # a responder linking this chat
            return IDLE, IDLE
        return await run(ctx, "contact", "welcome")  # what a wrong invite code gets
    if ctx.defender is None:
        return await stranger(ctx, flow, state, typed)
    onboarding = ctx.defender.status is DefenderStatus.onboarding
    choice = inbound.choice or (None if onboarding else typed_choice(ctx, flow, typed))
    key = choice or typed
    if is_alert(ctx, choice, typed):
        ctx.data = {}
        return await run(ctx, "panic", "start")
    if not (flow == panic.NAME and state in panic.TELLING) and await frozen(ctx):
        if registry.is_pin_state(flow, state) and pin(inbound.text or "") is not None:
            with contextlib.suppress(Retry):  # counted; the duress PIN raises its alert
                await ctx.confirm_pin()  # and the answer is the same whichever PIN
        ctx.say(
            ctx._(
                "Your Signal safety number has changed. Until your protection desk confirms "
                "it is you, this chat can only raise an alert: send /sos if you are in danger."
            )
        )
        return flow, state
    if onboarding and flow == IDLE:
        flow, state = "onboarding", "resume"
    if (
        flow == IDLE
        and (choice == "calloff" or typed in words.CANCEL or pin(inbound.text or "") is not None)
        and await panic.taken_up(ctx)
    ):  # an alert stays on after its conversation closed: still called off from the phone
        flow, state = panic.NAME, "hold"
    if late and (typed in words.CANCEL or pin(inbound.text or "") is not None):
        # An answer to the closed check-in's question: a PIN gets what one answering no
        # question gets (idle_pin); neither is taken into the report, nor cancels it.
        await idle_pin(ctx)
        ctx.ask_again()
        return flow, state
    if not onboarding and (answer := await rollcall.answered(ctx, flow, typed)):
        if isinstance(answer, rollcall.Safe):  # its PIN first, as a check-in's "I'm safe"
            ctx.data = aside(flow, state, ctx.data)
            return await run(ctx, rollcall.NAME, "pin", handler=answer.ask_pin)
        if flow != IDLE:
            ctx.ask_again()
        return flow, state
    if choice is None and not registry.is_pin_state(flow, state) and pin_in_use(ctx, flow, state):
        await idle_pin(ctx)  # no question for a PIN is waiting (none, or one for something else)
    if (
        choice == words.SAFE_CHOICE
        or words.same_phrase(typed, ctx.settings.get("safe_phrase"))
        or (not onboarding and registry.triggers().get(typed) == (checkin.NAME, "safe"))
    ):  # "/safe" typed (as the timer's message says) is the button: a report is set aside
        ctx.data = aside(flow, state, ctx.data)
        return await run(ctx, "checkin", "safe")
    if flow != IDLE and await checkin.answers_reminder(ctx, typed):
        ctx.data = aside(flow, state, ctx.data)
        return await run(ctx, "checkin", "safe")
    if typed in words.HELP:  # an alert waiting in discreet mode is nothing in progress there
        help.show(ctx, in_progress=flow != IDLE and not (flow == panic.NAME and ctx.discreet))
        ctx.ask_again()
        return flow, state
    if (
        onboarding
        and (typed in words.CANCEL | words.MENU or key in registry.triggers())
        and not (typed in words.CANCEL and flow == panic.NAME and has_pin(ctx))
    ):  # an alert raised before the setup ends is called off as any other, once a PIN is set
        ctx.say(ctx._("Let's finish setting up first."))
        ctx.ask_again()
        return flow, state
    if (
        flow == IDLE
        and typed in ("/stop", "stop")
        and await contacts.may_stop(ctx.session, address=ctx.address)
    ):  # a defender who is also someone's trusted contact can still withdraw (as promised)
        return await run(ctx, "contact", "welcome")
    if typed in words.CANCEL:
        spec = registry.get(flow)
        if spec is not None and spec.on_cancel is not None:
            return await run(ctx, flow, state, handler=spec.on_cancel)
        if RESUME in ctx.data:  # the check-in is dropped, not the report set aside for it
            ctx.say(ctx._("Stopped."))
            return resume(ctx)
        ctx.data = {}
        if flow != IDLE:
            ctx.say(ctx._("Stopped."))
        help.menu(ctx)
        return IDLE, IDLE
    if typed in words.MENU:
        ctx.data = {}
        help.menu(ctx)
        return IDLE, IDLE
    if key in registry.triggers():
        ctx.data = {}
        return await run(ctx, *registry.triggers()[key])
    if flow == IDLE:
        if (code := _CODE.fullmatch(typed)) and (
            found := await tried(ctx, contact.redeem(ctx, code[1] + code[2]))
        ):
            return found
        help.menu(ctx, unknown=True)
        return IDLE, IDLE
    return await run(ctx, flow, state)


def is_alert(ctx: Context, choice: str | None, typed: str) -> bool:
    """The alert button, an alert command (words after it, "@bot" or "!" change nothing:
    "/sos police at the door"), a bare "SOS!" alone ("¡SOS!", "S.O.S." too), or the
    defender's code phrase."""
    if choice == words.ALERT_CHOICE or words.cry(typed):
        return True
    command = _COMMAND.split(typed, maxsplit=1)[0].rstrip("!.?")
    if command.startswith("/") and command in words.ALERT:
        return True
    return words.same_phrase(typed, ctx.settings.get("alert_phrase"))


async def frozen(ctx: Context) -> bool:
    """R6: while the desk has not resolved a defender's "safety number changed" alert, their
    Signal chat may be a new phone, or their number in someone else's hands. Only an alert
    is taken from it: no "I'm safe", PIN, cancel, setting or deletion (an "I'm safe" from a
    phone in other hands would stop the check-in's escalation). The desk resolves the alert
    once it has verified the defender another way and trusted the new key."""
    if ctx.inbound.channel != "signal" or ctx.defender is None:
        return False
    return await alerts.is_open(ctx.session, ctx.defender.id, AlertKind.identity_changed)


async def key_changed(event: store.Event, loaded: store.Loaded) -> None:
    """R6 on receipt: signal-cli could not decrypt a message from a defender's Signal chat,
    their safety number having changed. The desk is alerted at once, as when a send to them
    is refused (core.delivery), so the chat is ``frozen`` before anything from the new key is
    acted on (signal-cli offers the message again once the desk has trusted the key).
    Nothing is answered: no reply could reach an untrusted key."""
    owner = loaded.defender or loaded.hidden
    if owner is not None:
        await alerts.raise_alert(
            event.session,
            event.vault,
            defender=owner,
            kind=AlertKind.identity_changed,
            now=event.now,
        )


def has_pin(ctx: Context) -> bool:
    return ctx.defender is not None and ctx.defender.cancel_pin_hash is not None


def pin_in_use(ctx: Context, flow: str, state: str) -> bool:
    """Whether a PIN typed here is one in use, not a new one being chosen (onboarding,
    settings.NEW_PIN_STATES: the duress PIN chosen again is no alarm)."""
    assert ctx.defender is not None
    choosing = flow == settings.NAME and state in settings.NEW_PIN_STATES
    return not choosing and ctx.defender.status is not DefenderStatus.onboarding


async def idle_pin(ctx: Context) -> None:
    """A PIN typed with no question asking for one (its prompt expired, a question about
    something else, or on a captor's order): the duress PIN still raises its silent alert.
    The answer is what any number gets there, after the same two Argon2id checks whichever
    PIN it is (core.pins); not counted as a wrong PIN either: a stray number is not a guess.
    Only a PIN in use (``pin_in_use``)."""
    typed = pin(ctx.inbound.text or "")
    if typed is None or ctx.pin_checker is None or ctx.defender is None:
        return
    if await ctx.pin_checker(typed) is Verdict.duress:
        await alerts.raise_alert(
            ctx.session, ctx.vault, defender=ctx.defender, kind=AlertKind.duress, now=ctx.now
        )


async def hidden_alert(ctx: Context, hidden: Defender) -> None:
    """A defender hidden after a forced deletion (core.defenders.hide) is answered as a
    stranger, but their alert button, command or code phrase still raises an alert: silently,
    and flagged "do not contact the device" (core.alerts), as the phone may be in other hands."""
    inbound = ctx.inbound
    if inbound.edited or inbound.forwarded:
        return
    typed = fold(inbound.text) if inbound.text else ""
    owner = dataclasses.replace(ctx, defender=hidden, data={}, replies=[], delete_ids=[])
    if is_alert(owner, inbound.choice, typed):
        await alerts.raise_alert(
            ctx.session, ctx.vault, defender=hidden, kind=AlertKind.panic, now=ctx.now
        )


def typed_choice(ctx: Context, flow: str, typed: str) -> str | None:
    """Signal and the console have no buttons: their options are numbered. With nothing in
    progress, a number or an option's words answer the last menu; with no menu kept, the one
    option a check-in reminder offers ("1. I'm safe", core.notices). An alert waiting in
    discreet mode counts as nothing in progress: its phone shows the menu (``flows.panic``)."""
    if not (flow == IDLE or (flow == panic.NAME and ctx.discreet)) or not typed:
        return None
    asked = ctx.data.get("_ask", {}).get("choices") or [[words.SAFE_CHOICE, ctx._("I'm safe")]]
    said = words.label(typed)  # "1." is "1"
    if said.isdigit() and len(said) <= 2 and 1 <= int(said) <= len(asked):
        return str(asked[int(said) - 1][0])
    key = next((str(key) for key, label in asked if said == words.label(label)), None)
    if key is not None and any(
        words.same_phrase(typed, ctx.settings.get(phrase))
        for phrase in ("alert_phrase", "safe_phrase")
    ):
        return None  # the defender's own code phrase (read only then: it is decrypted)
    return key


async def stranger(ctx: Context, flow: str, state: str, typed: str) -> tuple[str, str]:
    """Someone the bot does not know (yet): an invite code, or a trusted contact answering."""
    code = _CODE.fullmatch(typed)
    if code and (found := await tried(ctx, _redeem(ctx, code[1] + code[2]))):
        return found
    if flow != IDLE and typed not in words.CANCEL:
        return await run(ctx, flow, state)
    return await run(ctx, "contact", "welcome")


async def _redeem(ctx: Context, code: str) -> tuple[str, str] | None:
    return await onboarding.redeem(ctx, code) or await contact.redeem(ctx, code)


async def tried(ctx: Context, attempt: Coroutine[Any, Any, T]) -> T | None:
    """A code typed in a chat (an invite, a contact's or a desk link code), unless that chat
    has already typed CODE_TRIES wrong ones this hour: then every code, right or wrong, gets
    what a wrong one gets, so guessing stays hopeless (R21). A code is about 40 bits."""
    guesses = Throttle(CODE_TRIES, CODE_WINDOW_S, scope="code_guess", keyer=ctx.vault.blind_index)
    who = str(ctx.address.id)
    if await guesses.blocked_in(ctx.session, who, ctx.now):
        attempt.close()
        return None
    found = await attempt
    if not found:
        await guesses.hit_in(ctx.session, who, ctx.now)
    return found or None


async def run(
    ctx: Context, flow: str, state: str, *, handler: registry.State | None = None
) -> tuple[str, str]:
    """Run one state function; bad input (``Retry``) restores the data and asks again."""
    spec = registry.get(flow)
    function = handler or (spec.states[state] if spec is not None else None)
    if function is None:  # a stored state that no longer exists (an old release)
        ctx.data = {}
        help.menu(ctx)
        return IDLE, IDLE
    snapshot, said = copy.deepcopy(ctx.data), len(ctx.replies)
    try:
        target = await function(ctx)
    except Retry as retry:
        ctx.data = snapshot
        del ctx.replies[said:]
        ctx.say(retry.message)
        ctx.ask_again()
        return flow, state
    if target == END:
        if RESUME in ctx.data:
            return resume(ctx)
        ctx.data = {"_ask": ctx.data["_ask"]} if ctx.asked and "_ask" in ctx.data else {}
        return IDLE, IDLE
    return registry.resolve(flow, target)


RESUME = "_resume"  # a report set aside while the defender checks in (``aside``)


def aside(flow: str, state: str, data: dict[str, Any]) -> dict[str, Any]:
    """The data to start a check-in with from ``flow``: a report being written is set aside
    in it (its sealed parts live in the conversation until it is filed) and taken up again
    once the check-in is done (``resume``), also when "I'm safe" comes again during that
    check-in; any other conversation just ends."""
    if RESUME in data:
        return {RESUME: data[RESUME]}
    if flow != report.NAME:
        return {}
    return {RESUME: {"flow": flow, "state": state, "data": data}}


def resume(ctx: Context, *, ask: bool = True) -> tuple[str, str]:
    """Back to the report set aside: its last question asked again (unless ``ask`` is False:
    the message that came is then handled there, and asks what follows)."""
    kept = ctx.data[RESUME]
    ctx.data = kept["data"]
    if ask:
        ctx.ask_again()
    return kept["flow"], kept["state"]


def keep_for(flow: str, data: dict[str, Any]) -> timedelta | None:
    """How long an unanswered conversation is kept: its flow's TTL; with a report set aside,
    the report's. The check-in's own question still closes after the check-in's TTL
    (``lapsed``), and the report is then taken up again, not dropped with it."""
    spec = registry.get(data[RESUME]["flow"] if RESUME in data else flow)
    return spec.ttl if spec is not None else None


def lapsed(ctx: Context, flow: str) -> bool:
    """A report was set aside for a check-in whose question then went unanswered for its
    TTL: what expiry is for any other conversation (``store.load``), counted the same way."""
    spec = registry.get(flow)
    return (
        RESUME in ctx.data
        and spec is not None
        and spec.ttl is not None
        and ctx.since is not None
        and ctx.since + spec.ttl <= ctx.now
    )


async def _duress_pin(event: store.Event, loaded: store.Loaded, ctx: Context) -> bool:
    """The message was the duress PIN, answering a question that asked for a PIN, or typed
    where a PIN in use raises its alert all the same (``idle_pin``)."""
    typed = pin(event.inbound.text or "")
    if typed is None or ctx.defender is None or event.checker is None:
        return False
    flow, state = loaded.flow, loaded.state
    if not (registry.is_pin_state(flow, state) or pin_in_use(ctx, flow, state)):
        return False
    ctx.forget_message()
    return await event.checker(ctx.defender, typed) is Verdict.duress


async def fallback(event: store.Event) -> None:
    """After an unexpected error: still raise a requested alert, and always answer."""
    if not await store.mark_seen(event):
        return
    loaded = await store.load(event)
    if event.inbound.key_changed:
        await key_changed(event, loaded)
        return
    ctx = Context(
        event.session, event.vault, event.now, event.inbound, loaded.address, loaded.defender, {}
    )
    typed = fold(event.inbound.text) if event.inbound.text else ""
    if loaded.hidden is not None:
        await hidden_alert(ctx, loaded.hidden)
    if ctx.defender is not None and is_alert(ctx, event.inbound.choice, typed):
        await panic.raise_now(ctx)
    elif ctx.defender is not None and await _duress_pin(event, loaded, ctx):
        # R27: an error while handling the duress PIN never swallows its silent alert
        await alerts.raise_alert(
            ctx.session, ctx.vault, defender=ctx.defender, kind=AlertKind.duress, now=ctx.now
        )
    ctx.say(ctx._("Sorry, something went wrong on our side. Please try again."))
    await store.reply(
        event,
        loaded.address,
        store.merge(ctx.replies, ctx.delete_ids),
        priority=Priority.P0,
        recipient="defender" if ctx.defender else None,
    )
