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

The checks and alarms outside any state function are in ``flows.router_alarms``, the codes
typed in a chat in ``flows.router_codes``, running a state function and a report set aside
for a check-in in ``flows.router_states``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Awaitable, Callable

from core import alerts, contacts, live_locations
from core.models import AlertKind, DefenderStatus, Priority
from core.pins import Verdict
from core.text import fold, pin
from flows import checkin, contact, desk, help, panic, registry, report, rollcall, store, words
from flows.context import Context, Retry
from flows.router_alarms import (
    duress_pin,
    frozen,
    hidden_alert,
    idle_pin,
    is_alert,
    key_changed,
    pin_in_use,
)
from flows.router_codes import CODE, stranger, tried
from flows.router_states import RESUME, aside, keep_for, lapsed, resume, run
from flows.store import EXPIRED, IDLE


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
        # Whatever its verdict, a message shaped like a PIN is answered at P0, first: the
        # duress PIN's answer as soon as the cancel PIN's (R8, ``store.reply``).
        shaped = pin(event.inbound.text or "") is not None
        await store.reply(
            event,
            loaded.address,
            store.merge(ctx.replies, ctx.delete_ids),
            priority=Priority.P0 if shaped else ctx.priority,
            recipient="defender" if ctx.defender is not None else None,
        )
    if not ctx.forgotten:  # R12: nothing stays in a Telegram chat for more than a day
        await store.forget_later(event, loaded.address, ctx.defender, ctx.delete_ids)


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
    if late:  # the "I'm safe" question is closed, not the report set aside for it
        closed = (
            ctx._(
                "The roll-call's question was closed after a long silence: without your PIN, "
                "your answer “I'm safe” was not recorded. Your report is kept: we go on where "
                "you left it."
            )
            if flow == rollcall.NAME
            else ctx._(
                "The check-in was closed after a long silence: without your PIN, you are not "
                "checked in. Your report is kept: we go on where you left it."
            )
        )
        ctx.say(closed, sensitive=True)
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
        if flow == rollcall.NAME:  # "I need help" instead: its "I'm safe" PIN is not awaited
            if RESUME in ctx.data:
                return resume(ctx)
            ctx.data = {}
            return IDLE, IDLE
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
        if (code := CODE.fullmatch(typed)) and (
            found := await tried(ctx, contact.redeem(ctx, code[1] + code[2]))
        ):
            return found
        help.menu(ctx, unknown=True)
        return IDLE, IDLE
    return await run(ctx, flow, state)


def has_pin(ctx: Context) -> bool:
    return ctx.defender is not None and ctx.defender.cancel_pin_hash is not None


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


async def too_fast(event: store.Event) -> None:
    """The first message of a chat over its allowance (``flows.engine``, R21), not read: a
    defender is told once, in their language, that the last messages were not read and how
    to ask for help meanwhile; anyone else, nothing."""
    if not await store.mark_seen(event):
        return
    loaded = await store.load(event)
    if loaded.defender is None:
        return
    ctx = Context(
        event.session, event.vault, event.now, event.inbound, loaded.address, loaded.defender, {}
    )
    ctx.say(
        ctx._(
            "You are sending messages faster than we can read them: the last ones were not "
            "read. Wait a minute, then send them again. To ask for help, send /sos."
        )
    )
    message = store.merge(ctx.replies, ctx.delete_ids)
    await store.reply(event, loaded.address, message, priority=Priority.P1, recipient="defender")
    await store.forget_later(event, loaded.address, ctx.defender, ctx.delete_ids)  # R12


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
    elif ctx.defender is not None and await duress_pin(event, loaded, ctx):
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
    await store.forget_later(event, loaded.address, ctx.defender, ctx.delete_ids)  # R12
