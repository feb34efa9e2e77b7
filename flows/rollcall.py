"""Roll-call answers: "I'm safe" or "I need help" to the desk's "everyone check in now".

(any state) --a roll-call's button, or a typed answer (a number, or a bare "help", only
while the roll-call is the last thing the defender was asked)--> answer recorded (a later
one replaces it until the roll-call closes), acknowledged; "I need help" raises the alert
--> the same state, its question asked again

The router tries this after the alert (button, command, code phrase), the frozen chat (R6)
and a closed check-in's PIN, and before anything else: a typed "I'm safe" (or "1") still
answers a check-in while one waits for it (R11), and the defender's own "I'm safe" code
phrase is never taken for a roll-call answer. A PIN is never an answer (4 to 8 digits).

"I need help" opens a panic alert (core.alerts), with the roll-call on its timeline: the
defender says, in one tap, what the alert button says; DESIGN.md's panic semantics (the desk
and the trusted contacts at once, repeated until acknowledged) are the ones that fit. After
the roll-call has closed it is not recorded, but still raises the alert: an answer that comes
late must not be the one that is lost.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from core import alerts, checkins, rollcalls
from core.actions import event
from core.messages import Outbound
from core.models import AlertKind, CheckIn, CheckInState
from core.rollcalls import HELP, SAFE, Outcome
from flows import words
from flows.context import Context
from flows.store import IDLE

NAME = "rollcall"
ON_SCREEN = "_rollcall"  # in an idle conversation's data: the roll-call last answered


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


async def answered(ctx: Context, flow: str, typed: str) -> bool:
    """The event was a roll-call answer, and has been handled as one."""
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
            ctx.since is None
            or ctx.since <= rollcall.created_at
            or ctx.data.get(ON_SCREEN) == rollcall.id.hex
        ):
            return False
        if found == SAFE and await checkin_waits(ctx):
            return False
        said, rollcall_id = found, rollcall.id
    await record(ctx, rollcall_id, said)
    if flow == IDLE:
        ctx.data[ON_SCREEN] = rollcall_id.hex
    return True


async def record(ctx: Context, rollcall_id: uuid.UUID, said: str) -> None:
    assert ctx.defender is not None
    done = await rollcalls.answer(
        ctx.session, rollcall_id=rollcall_id, defender_id=ctx.defender.id, said=said, now=ctx.now
    )
    if done.outcome is Outcome.unknown:
        ctx.say(ctx._("Sorry, I didn't understand that."))
        return
    helping = said == HELP and (done.outcome is Outcome.closed or done.previous != HELP)
    if helping:
        alert = await alerts.raise_alert(
            ctx.session, ctx.vault, defender=ctx.defender, kind=AlertKind.panic, now=ctx.now
        )
        ctx.session.add(
            event(alert, "rollcall_help", ctx.now, actor="defender", rollcall=str(rollcall_id))
        )
    if done.outcome is Outcome.closed:
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
    else:
        # The answers offered again: a pressed keyboard's buttons all stop working
        # (core.callbacks), and the answer may change until the roll-call closes.
        if said == HELP:
            text = ctx._("Your protection desk has been told that you need help.")
        else:
            text = ctx._("Thank you: your answer “I'm safe” was recorded.")
        again = rollcalls.choices(rollcall_id, ctx.locale)
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
