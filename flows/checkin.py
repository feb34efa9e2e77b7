"""Check-ins: a timer, a regular check-in, "I'm safe", extend, pause, and when the next is due.

    /checkin --> menu --30m/1h/2h--> timer armed --> idle
                      --other time--> custom (45m, 2h30, at 18:30) --> timer armed
                      --I'm safe / extend / pause (a reason)--> pin --> done
                      --regular--> setup:routine
                      --when is my next?--> status (the next due time only: no history, R7)
    (any state) --"I'm safe" button or phrase--> pin

Everything that stops an escalation (I'm safe, extend, pause, replacing a timer whose
reminder has gone out or moving its deadline later, changing or ending a running regular
check-in) needs the PIN. The duress PIN does the same visible thing, so nothing
on the phone changes afterwards either, and raises a silent duress alert.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from core import alerts, checkins, rollcalls
from core.messages import Choice
from core.models import AlertKind, CheckIn, CheckInKind, CheckInState, DefenderStatus
from core.pins import Verdict
from flows import setup, words
from flows.context import END, Context, Retry
from flows.when import MIN_TIMER, WhenError, duration, parse_due

NAME = "checkin"
PIN_STATES = ("pin",)
QUICK = {"30m": 30, "1h": 60, "2h": 120}
EXTEND = {"15m": 15, "30m": 30, "1h": 60}
REASONS = ("travelling", "no_signal", "other")


async def start(ctx: Context) -> str:
    assert ctx.defender is not None
    _ = ctx._
    paused = ctx.defender.status is DefenderStatus.paused
    ctx.ask(
        _("Check-ins: what would you like to do?"),
        (
            Choice("30m", _("Check on me in 30 min")),
            Choice("1h", _("Check on me in 1 hour")),
            Choice("2h", _("Check on me in 2 hours")),
            Choice("custom", _("Another time")),
            Choice("safe", _("I'm safe")),
            Choice("extend", _("Give me more time")),
            Choice("routine", _("Regular check-in")),
            Choice("resume", _("Resume check-ins")) if paused else Choice("pause", _("Pause")),
            Choice("status", _("When is my next check-in?")),
        ),
    )
    return "menu"


async def menu(ctx: Context) -> str:
    _ = ctx._
    picked = ctx.need_choice(
        *QUICK, "custom", "safe", "extend", "routine", "pause", "resume", "status"
    )
    if picked in QUICK:
        after = timedelta(minutes=QUICK[picked])
        return await arm(ctx, ctx.now + after, after)
    if picked == "custom":
        return ask_custom(ctx)
    if picked == "safe":
        return await safe(ctx)
    if picked == "extend":
        if await _timer(ctx) is None:
            ctx.say(_("You have no timer running."))
            return END
        ctx.ask(
            _("How much more time?"),
            tuple(
                Choice(k, label)
                for k, label in zip(EXTEND, (_("15 min"), _("30 min"), _("1 hour")), strict=True)
            ),
        )
        return "extend"
    if picked == "routine":
        return setup.ask_routine(ctx)
    if picked == "pause":
        return ask_pause(ctx)
    if picked == "resume":
        assert ctx.defender is not None
        await checkins.resume(ctx.session, defender=ctx.defender, now=ctx.now)
        ctx.say(_("Check-ins resumed."))
        return await status(ctx)
    return await status(ctx)


def ask_pause(ctx: Context) -> str:
    _ = ctx._
    ctx.ask(
        _("Why do you want to pause? While paused, nobody is alerted if you don't check in."),
        (
            Choice("travelling", _("Travelling")),
            Choice("no_signal", _("No signal for a while")),
            Choice("other", _("Another reason")),
        ),
    )
    return "checkin:pause_reason"


async def _timer(ctx: Context, *states: CheckInState) -> CheckIn | None:
    assert ctx.defender is not None
    query = select(CheckIn).where(
        CheckIn.defender_id == ctx.defender.id,
        CheckIn.kind == CheckInKind.timer,
        CheckIn.state.in_(states or checkins.LIVE),
    )
    return (await ctx.session.execute(query.limit(1))).scalar()


def ask_custom(ctx: Context) -> str:
    ctx.ask(ctx._("How long, or until when? For example: 45m, 2h30, or at 18:30."))
    return "checkin:custom"


async def arm(ctx: Context, due: datetime, after: timedelta | None = None) -> str:
    """A new timer replaces a running one. Replacing one whose reminder went out, or moving
    the deadline later, can stop an escalation: that takes the PIN, as "extend" does.
    ``after``: the time was given as a duration, which then counts from the PIN (``late``)."""
    live = await _timer(ctx)
    if live is not None and (live.state is CheckInState.reminded or due > live.due_at):
        action: dict[str, object] = {"kind": "arm", "due": due.isoformat()}
        if after is not None:
            action["after_s"] = int(after.total_seconds())
        return ask_pin(ctx, action)
    return await _arm(ctx, due)


async def late(ctx: Context, action: dict[str, object]) -> str:
    """The timer asked for before the PIN, which may come a while later (each message keeps
    its question open): "in 2 hours" runs two hours from now; "at 18:00" gone by meanwhile
    (or under MIN_TIMER away) is asked again, never armed already due."""
    if "after_s" in action:
        return await _arm(ctx, ctx.now + timedelta(seconds=int(str(action["after_s"]))))
    due = datetime.fromisoformat(str(action["due"]))
    if due - ctx.now >= MIN_TIMER:
        return await _arm(ctx, due)
    if due <= ctx.now:
        ctx.say(ctx._("That time has passed."))
    else:
        ctx.say(ctx._("That is too soon: the shortest timer is 5 minutes."))
    return ask_custom(ctx)


async def _arm(ctx: Context, due: datetime) -> str:
    assert ctx.defender is not None
    await checkins.arm_timer(ctx.session, defender=ctx.defender, due_at=due, now=ctx.now)
    ctx.say(
        ctx._("Timer set: check in by {when} ({relative}). When you are safe, send /safe.").format(
            when=ctx.when(due), relative=ctx.in_(due)
        )
    )
    return END


async def custom(ctx: Context) -> str:
    _ = ctx._
    typed = ctx.need_text()
    try:
        due = parse_due(typed, now=ctx.now, zone_name=ctx.zone, locale=ctx.locale)
    except WhenError as bad:
        if bad.reason == "too_soon":
            raise Retry(_("That is too soon: the shortest timer is 5 minutes.")) from None
        if bad.reason == "too_late":
            raise Retry(_("That is too far away: the longest timer is 72 hours.")) from None
        raise Retry(_("I couldn't read that time. Try 45m, 2h30 or at 18:30.")) from None
    after = duration(typed)  # "20h" in French may be read as 20:00: then a clock time
    return await arm(ctx, due, after if after is not None and ctx.now + after == due else None)


async def extend(ctx: Context) -> str:
    return ask_pin(ctx, {"kind": "extend", "minutes": EXTEND[ctx.need_choice(*EXTEND)]})


async def pause_reason(ctx: Context) -> str:
    return ask_pin(ctx, {"kind": "pause", "reason": ctx.need_choice(*REASONS)})


async def safe(ctx: Context) -> str:
    return ask_safe(ctx, {"kind": "safe"})


def ask_safe(ctx: Context, action: dict[str, object]) -> str:
    """ "I'm safe" takes the PIN (R11): a check-in's, or a roll-call's (``flows.rollcall``,
    whose own "pin" state then takes it)."""
    assert ctx.defender is not None
    if ctx.defender.cancel_pin_hash is None:
        ctx.say(ctx._("You have not chosen a PIN yet, so we cannot take a check-in."))
        return END
    return ask_pin(ctx, action)


def ask_pin(ctx: Context, action: dict[str, object]) -> str:
    ctx.data["action"] = action
    ctx.ask(ctx._("Send your PIN to confirm."), sensitive=True)
    return "pin"


async def pin(ctx: Context) -> str:
    assert ctx.defender is not None
    verdict = await ctx.confirm_pin()
    # From here on both PINs do exactly the same, so the phone shows nothing different later.
    action = ctx.data.pop("action", {"kind": "safe"})
    kind, now, defender = action["kind"], ctx.now, ctx.defender
    if kind == "arm":
        return await late(ctx, action)
    if kind == "extend":
        by = timedelta(minutes=int(action["minutes"]))
        row = await checkins.extend(ctx.session, defender=defender, by=by, now=now)
        if row is None:
            ctx.say(ctx._("You have no timer running."))
            return END
        ctx.say(ctx._("Done. Check in by {when}.").format(when=ctx.when(row.due_at)))
        return END
    if kind == "routine":
        await setup.apply_routine(ctx, _text(action["time"]), _text(action["days"]))
        if action["time"] is None:
            ctx.say(ctx._("Saved."))
        return END
    if kind == "pause":
        await checkins.pause(ctx.session, defender=defender, reason=str(action["reason"]), now=now)
        ctx.say(ctx._("Check-ins paused. Send /checkin and choose Resume when you are back."))
        return END
    await checkins.check_in(ctx.session, ctx.vault, defender=defender, now=now)
    await _answers_rollcalls(ctx, verdict)
    ctx.say(ctx._("Thank you. We noted that you are safe."))
    return await status(ctx)


async def _answers_rollcalls(ctx: Context, verdict: Verdict) -> None:
    """An "I'm safe" confirmed with the PIN answers the open roll-calls ("everyone check in
    now") the defender has not answered yet: the desk counts them safe. The duress PIN records
    "I need help", as at a roll-call's own PIN (flows.rollcall); the phone sees nothing of it
    either way. An answer already given stands."""
    assert ctx.defender is not None
    said = rollcalls.SAFE if verdict is Verdict.ok else rollcalls.HELP
    for rollcall_id in await rollcalls.unanswered(
        ctx.session, defender_id=ctx.defender.id, now=ctx.now
    ):
        await rollcalls.answer(
            ctx.session,
            rollcall_id=rollcall_id,
            defender_id=ctx.defender.id,
            said=said,
            now=ctx.now,
        )


async def answers_reminder(ctx: Context, typed: str) -> bool:
    """A typed "1" or "I'm safe" answering a reminder's one option ("1. I'm safe" where
    options are numbered: Signal, the console) while a conversation is open, when that
    reminder came after the conversation's last step: the last question on screen is the
    reminder's, not the conversation's older one (R11: that check-in must not be lost)."""
    if ctx.defender is None or ctx.since is None or ctx.inbound.choice is not None:
        return False
    numbered = ctx.inbound.channel != "telegram"  # Telegram shows the option as a button
    said = words.label(typed)  # "1." is "1"
    if said != words.label(ctx._("I'm safe")) and not (numbered and said == "1"):
        return False
    since, now = ctx.since, ctx.now
    query = select(CheckIn.state, CheckIn.due_at, CheckIn.pre_reminder_s).where(
        CheckIn.defender_id == ctx.defender.id, CheckIn.state.in_(checkins.LIVE)
    )
    for state, due, pre in (await ctx.session.execute(query)).all():
        if state is CheckInState.reminded:
            asked: datetime | None = due  # the reminder at the deadline
        else:
            asked = due - timedelta(seconds=pre) if pre else None  # the pre-reminder
        if asked is not None and since < asked <= now:
            return True
    key = alerts.dedup_key(ctx.defender.id, AlertKind.missed_checkin)
    missed = await alerts.open_alert(ctx.session, key)  # its opening reminds them again
    return missed is not None and since < missed.triggered_at


def _text(value: object) -> str | None:
    return None if value is None else str(value)


async def status(ctx: Context) -> str:
    assert ctx.defender is not None
    due = await checkins.next_due(ctx.session, defender=ctx.defender)
    if due is None:
        ctx.say(ctx._("No check-in is scheduled."))
    else:
        ctx.say(
            ctx._("Your next check-in is due {when} ({relative}).").format(
                when=ctx.when(due), relative=ctx.in_(due)
            )
        )
    return END


TRIGGERS = {
    "/checkin": "start",
    "menu:checkin": "start",
    "/safe": "safe",
    "/status": "status",
}
STATES = {
    "start": start,
    "menu": menu,
    "custom": custom,
    "extend": extend,
    "pause_reason": pause_reason,
    "safe": safe,
    "pin": pin,
    "status": status,
}
