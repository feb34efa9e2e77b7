"""Roll-call answers: "I'm safe" or "I need help" to the desk's "everyone check in now".

(any state) --a roll-call's button, or a typed answer (a number, or a bare "help", only
while the roll-call is the last thing the defender was asked)-->
    "I need help": recorded (a later answer replaces it until the roll-call closes),
    acknowledged, the alert raised --> the same state, its question asked again
    "I'm safe", the roll-call open: pin --the PIN--> recorded, acknowledged --> done (the
        question is over: what comes next goes to the menu, not to the roll-call)
    "I'm safe", the roll-call closed: told so, nothing recorded --> the same state

"I'm safe" takes the PIN, exactly as a check-in's does (R11; ``checkin.ask_safe`` asks, in the
same words): from a phone in other hands it would tell the desk that all is well. Like any
"I'm safe" it ends the conversation in progress, except a report, set aside and taken up
again afterwards (``router_states.aside``). A wrong PIN is asked again, and the WRONG_LIMIT-th in a
row counts as the duress PIN (``core.pins``): never a visible lockout (R10). The duress PIN
gets, on the phone, byte for byte what the PIN gets (R8) and raises the silent duress alert
(``Context.confirm_pin``); the roll-call records "I need help", never "safe": the desk's count
must not say the defender is safe when they are not, and the duress alert (on whose timeline
the roll-call is put) tells the desk why, and not to contact the device.

The router tries this after the alert (button, command, code phrase), the frozen chat (R6)
and a closed check-in's PIN, and before anything else: a typed "I'm safe" (or "1") still
answers a check-in while one waits for it (R11), and the defender's own "I'm safe" code
phrase is never taken for a roll-call answer. A PIN is never an answer (4 to 8 digits).

"I need help" takes no PIN. It opens a panic alert (core.alerts), with the roll-call on its
timeline: the defender says, in one tap, what the alert button says; DESIGN.md's panic
semantics (the desk and the trusted contacts at once, repeated until acknowledged) are the
ones that fit. After the roll-call has closed it is not recorded, but still raises the alert:
an answer that comes late must not be the one that is lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from core import alerts, checkins, rollcalls
from core.actions import event
from core.messages import Outbound
from core.models import AlertKind, CheckIn, CheckInState
from core.pins import Verdict
from core.rollcalls import HELP, SAFE, Outcome
from flows import checkin, words
from flows.context import END, Context
from flows.store import IDLE

NAME = "rollcall"
PIN_STATES = ("pin",)
ON_SCREEN = "_rollcall"  # in an idle conversation's data: the roll-call last answered


@dataclass(frozen=True)
class Safe:
    """ "I'm safe" to an open roll-call: recorded once the PIN confirms it. The router asks
    for it with ``ask_pin``, in this flow (a report set aside, as for a check-in's)."""

    rollcall_id: uuid.UUID

    async def ask_pin(self, ctx: Context) -> str:
        return checkin.ask_safe(ctx, {"kind": NAME, "rollcall": self.rollcall_id.hex})


def typed_answer(ctx: Context, typed: str) -> str | None:
    if not typed:
        return None
    said = words.label(typed)
    numbered = ctx.inbound.channel != "telegram"  # Telegram shows the options as buttons
    if said in words.ROLLCALL_SAFE or said == words.label(ctx._("I'm safe")):
        return SAFE
    if said in words.ROLLCALL_HELP or said == words.label(ctx._("I need help")):
        return HELP
    if numbered and typed in ("1", "2"):
        return SAFE if typed == "1" else HELP
    return None


async def answered(ctx: Context, flow: str, typed: str) -> bool | Safe:
    """The event was a roll-call answer: handled (True), or an "I'm safe" that waits for the
    PIN (``Safe``); False if it was none."""
    if ctx.defender is None:
        return False
    choice = ctx.inbound.choice
    if choice is not None:
        parsed = rollcalls.parse(choice)
        if parsed is None:
            return False
        said, rollcall_id = parsed
    else:
        found = typed_answer(ctx, typed)
        if found is None or words.same_phrase(typed, ctx.settings.get("safe_phrase")):
            return False
        rollcall = await rollcalls.latest_for(ctx.session, ctx.defender.id, now=ctx.now)
        if rollcall is None:
            return False
        # A number, or a bare "help", means something else too: the roll-call's only while
        # it is the last thing asked (the conversation's own question came before it).
        shared = typed in ("1", "2") or typed in words.HELP
        if shared and not (
            ctx.since is None or ctx.since <= rollcall.created_at or on_screen(ctx, rollcall.id)
        ):
            return False
        if found == SAFE and await checkin_waits(ctx):
            return False
        said, rollcall_id = found, rollcall.id
    if said == SAFE and await rollcalls.takes_answers(
        ctx.session, rollcall_id=rollcall_id, defender_id=ctx.defender.id, now=ctx.now
    ):
        return Safe(rollcall_id)  # closed or unknown: told so below, nothing to confirm
    await record(ctx, rollcall_id, said)
    if flow == IDLE:
        ctx.data[ON_SCREEN] = rollcall_id.hex
    return True


def on_screen(ctx: Context, rollcall_id: uuid.UUID) -> bool:
    """The roll-call's options were the last thing shown: after an "I need help" answered
    with nothing in progress (``ON_SCREEN``). Not after the PIN that confirmed an "I'm safe"
    (``pin``): that answer ends the roll-call's question."""
    return bool(ctx.data.get(ON_SCREEN) == rollcall_id.hex)


async def pin(ctx: Context) -> str:
    """The PIN for a roll-call's "I'm safe" (asked by ``Safe.ask_pin``)."""
    assert ctx.defender is not None
    verdict = await ctx.confirm_pin()  # a wrong PIN asks again; duress raised its alert
    # From here on both PINs answer byte for byte the same: only what is recorded differs.
    rollcall_id = uuid.UUID(str(ctx.data.pop("action", {}).get("rollcall")))
    said = SAFE if verdict is Verdict.ok else HELP
    done = await rollcalls.answer(
        ctx.session, rollcall_id=rollcall_id, defender_id=ctx.defender.id, said=said, now=ctx.now
    )
    if said == HELP and done.outcome is Outcome.recorded:  # on the duress alert's timeline
        key = alerts.dedup_key(ctx.defender.id, AlertKind.duress)
        if (duress := await alerts.open_alert(ctx.session, key)) is not None:
            told = event(
                duress, "rollcall_help", ctx.now, actor="defender", rollcall=str(rollcall_id)
            )
            ctx.session.add(told)
    acknowledge(ctx, rollcall_id, SAFE, done.outcome, offer=False)
    return END


async def record(ctx: Context, rollcall_id: uuid.UUID, said: str) -> None:
    assert ctx.defender is not None
    done = await rollcalls.answer(
        ctx.session, rollcall_id=rollcall_id, defender_id=ctx.defender.id, said=said, now=ctx.now
    )
    if done.outcome is not Outcome.unknown and said == HELP and await _help_is_new(ctx, done):
        alert = await alerts.raise_alert(
            ctx.session, ctx.vault, defender=ctx.defender, kind=AlertKind.panic, now=ctx.now
        )
        ctx.session.add(
            event(alert, "rollcall_help", ctx.now, actor="defender", rollcall=str(rollcall_id))
        )
    acknowledge(ctx, rollcall_id, said, done.outcome)


async def _help_is_new(ctx: Context, done: rollcalls.Answered) -> bool:
    """Not the same "I need help" tapped again while its alert is open. An earlier "help"
    recorded under duress (``pin``) opened no panic alert: this one does."""
    assert ctx.defender is not None
    if done.outcome is Outcome.closed or done.previous != HELP:
        return True
    return not await alerts.is_open(ctx.session, ctx.defender.id, AlertKind.panic)


def acknowledge(
    ctx: Context, rollcall_id: uuid.UUID, said: str, outcome: Outcome, *, offer: bool = True
) -> None:
    """What the phone is told. ``offer``: the answers are offered again. Not after the PIN
    that confirmed "I'm safe": the question is over, and a "2" or a "help" typed later is the
    menu's, never a roll-call answer nobody sees asked (numbered options left on screen would
    say otherwise); on Telegram only its "I need help" button stays, which nothing typed can
    be taken for. The answer can still change: "I need help" typed, or the alert."""
    if outcome is Outcome.unknown:
        ctx.say(ctx._("Sorry, I didn't understand that."))
        return
    if outcome is Outcome.closed:
        if said == HELP:
            ctx.say(
                ctx._(
                    "This roll-call has closed, but your protection desk has been told "
                    "that you need help."
                ),
                sensitive=True,
            )
        else:
            ctx.say(ctx._("This roll-call has closed; your answer was not recorded. Thank you."))
        return
    # The answers offered again: a pressed keyboard's buttons all stop working
    # (core.callbacks), and the answer may change until the roll-call closes.
    if said == HELP:
        text = ctx._("Your protection desk has been told that you need help.")
    else:
        text = ctx._("Thank you: your answer “I'm safe” was recorded.")
    again = rollcalls.choices(rollcall_id, ctx.locale)
    if not offer:  # Telegram: "I need help" stays one tap away (a button is never a number)
        again = again[1:] if ctx.inbound.channel == "telegram" else ()
    sensitive = said == HELP or ctx.discreet
    ctx.replies.append(Outbound(text=text, choices=again, sensitive=sensitive))


async def checkin_waits(ctx: Context) -> bool:
    """A check-in's reminder (or its pre-reminder) has asked for "I'm safe", or its alert
    is open: a typed "I'm safe" is that check-in's (R11), not the roll-call's."""
    assert ctx.defender is not None
    query = select(CheckIn.state, CheckIn.due_at, CheckIn.pre_reminder_s).where(
        CheckIn.defender_id == ctx.defender.id, CheckIn.state.in_(checkins.LIVE)
    )
    for state, due, pre in (await ctx.session.execute(query)).all():
        if state is CheckInState.reminded or (pre and due - timedelta(seconds=pre) <= ctx.now):
            return True
    key = alerts.dedup_key(ctx.defender.id, AlertKind.missed_checkin)
    return await alerts.open_alert(ctx.session, key) is not None


STATES = {"pin": pin}
