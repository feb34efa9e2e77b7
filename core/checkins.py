"""Check-ins as the flows see them: one-off timers, routines, "I'm safe", extend, pause.

Timers are rows the sweep claims (``core.sweep``). Every change here locks the defender's rows,
bumps their ``version`` and clears any sweep lease, so a sweep that claimed a row before the
change drops its stale decision. The lock order (PostgreSQL), kept by every writer here: the
defender's row first (``FOR NO KEY UPDATE``), then its check-ins by due time and id. Callers
that change the defender row itself (a policy assigned, a new zone, a PIN counter) lock it
first anyway, so a check-in and a desk's policy change wait for each other, never deadlock.
The policy is read after those locks: a policy change commits with ``follow_policy`` under
the same locks, so a check-in that waited for it re-arms with the new policy, not the old.

Flows must verify the PIN before ``check_in``, ``extend``, ``pause`` and re-arming a timer
whose reminder has gone out: each of them stops an escalation.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, time, timedelta

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import actions, alert_handling, alerts, follow_ups, notices, outbox, recipients, wakeup
from core.claims import locked, write_lock
from core.crypto import Vault
from core.escalation import Policy, first_action_at, next_occurrence, parse_days
from core.models import (
    AlertKind,
    CheckIn,
    CheckInKind,
    CheckInState,
    Defender,
    DefenderStatus,
    OutboxMessage,
)
from core.outbox import enqueue_many
from core.timers import HELD

LIVE = (CheckInState.armed, CheckInState.reminded)


async def _rows(
    session: AsyncSession, defender: Defender, states: tuple[CheckInState, ...]
) -> list[CheckIn]:
    await write_lock(session)
    await _lock_people(session, Defender.id == defender.id)
    stmt = (
        select(CheckIn)
        .where(CheckIn.defender_id == defender.id, CheckIn.state.in_(states))
        .order_by(CheckIn.due_at, CheckIn.id)  # the lock order follow_policy keeps too
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(locked(stmt, session))).scalars())


async def _lock_people(session: AsyncSession, *where: ColumnElement[bool]) -> None:
    """Lock the defenders' rows, by id, before their check-ins (PostgreSQL; the module's lock
    order), and read them again: a policy assigned while this waited is the one that counts.
    ``FOR NO KEY UPDATE``: the sweep opening an alert for one of them (a foreign key's
    ``FOR KEY SHARE``) does not wait for it while it waits for a row the sweep claimed."""
    stmt = (
        select(Defender)
        .where(*where)
        .order_by(Defender.id)
        .execution_options(populate_existing=True)
    )
    await session.execute(locked(stmt, session, key_share=True))


def _touch(session: AsyncSession, row: CheckIn, state: CheckInState) -> None:
    row.state = state
    row.version += 1
    row.lease_owner, row.lease_until = None, None
    if state is CheckInState.armed:
        wakeup.touch(session, wakeup.TIMERS, row.next_action_at)


def _follow(row: CheckIn, policy: Policy) -> None:
    row.grace_s, row.pre_reminder_s = policy.grace_s, policy.pre_reminder_s


def _arm(
    session: AsyncSession, row: CheckIn, due_at: datetime, now: datetime, policy: Policy
) -> None:
    """Arm ``row`` for ``due_at`` with the defender's policy as it is now: the sweep re-arms a
    routine with the row's own copy (no policy read in its hot path), so every arm here, and
    ``follow_policy`` when a policy changes, keep that copy current."""
    _follow(row, policy)
    row.due_at = due_at
    row.next_action_at = first_action_at(due_at, row.pre_reminder_s, now)
    _touch(session, row, CheckInState.armed)


def _routine_due(defender: Defender, row: CheckIn, after: datetime) -> datetime | None:
    if not row.routine_time or not row.routine_days:
        return None
    local = time.fromisoformat(row.routine_time)
    return next_occurrence(local, row.routine_days, defender.timezone, after)


async def _new(
    session: AsyncSession, defender: Defender, kind: CheckInKind, due_at: datetime, now: datetime
) -> CheckIn:
    policy = await alerts.policy_for(session, defender)
    row = CheckIn(defender_id=defender.id, kind=kind, version=0, created_at=now)
    _arm(session, row, due_at, now, policy)
    session.add(row)
    return row


async def arm_timer(
    session: AsyncSession, *, defender: Defender, due_at: datetime, now: datetime
) -> CheckIn:
    """A one-off deadline; it replaces the defender's live (or paused) one-off timer, whose
    reminders still waiting to go are withdrawn (they would ask about a timer now ended)."""
    replaced = []
    for row in await _rows(session, defender, (*LIVE, CheckInState.paused)):
        if row.kind is CheckInKind.timer:
            _touch(session, row, CheckInState.cancelled)
            replaced.append(row.id)
    await withdraw_reminders(session, replaced)
    return await _new(session, defender, CheckInKind.timer, due_at, now)


async def set_routine(
    session: AsyncSession, *, defender: Defender, local_time: time, days: str, now: datetime
) -> CheckIn:
    """Every ``days`` (Monday = 0) at ``local_time`` in the defender's zone, DST included.
    A reminder already running finishes first; the new schedule applies after it (a
    pre-reminder still waiting to go about another time is withdrawn). Set while
    the defender is paused, it waits for the resume (state ``paused``), as their other
    routines do: it does not start by itself with its first occurrence."""
    parse_days(days)
    hhmm = local_time.strftime("%H:%M")
    for row in await _rows(session, defender, (*LIVE, CheckInState.paused)):
        if row.kind is CheckInKind.routine:
            row.routine_time, row.routine_days = hhmm, days
            if row.state is CheckInState.armed:
                due = next_occurrence(local_time, days, defender.timezone, now)
                if due != row.due_at:  # its pre-reminder waiting is about the old time
                    await withdraw_reminders(session, [row.id])
                _arm(session, row, due, now, await alerts.policy_for(session, defender))
                _hold_if_paused(session, defender, row)
            else:
                _touch(session, row, row.state)
            return row
    due = next_occurrence(local_time, days, defender.timezone, now)
    row = await _new(session, defender, CheckInKind.routine, due, now)
    row.routine_time, row.routine_days = hhmm, days
    _hold_if_paused(session, defender, row)
    return row


async def clear_routine(session: AsyncSession, *, defender: Defender) -> None:
    """No more routine check-ins; a reminder already running still ends in an alert if unmet.
    The pre-reminders still waiting to go of the routines ended here are withdrawn."""
    ended = []
    for row in await _rows(session, defender, (*LIVE, CheckInState.paused)):
        if row.kind is not CheckInKind.routine:
            continue
        if row.state is CheckInState.reminded:
            row.routine_days = None  # this occurrence is the last one
            _touch(session, row, row.state)
        else:
            _touch(session, row, CheckInState.cancelled)
            ended.append(row.id)
    await withdraw_reminders(session, ended)


async def check_in(
    session: AsyncSession, vault: Vault, *, defender: Defender, now: datetime
) -> bool:
    """ "I'm safe", after the flow verified the PIN: meets the live timer, re-arms the routine,
    keeps only this time as the last check-in (R24) and closes an open missed-check-in alert as
    safe, with an all-clear to everyone who was alerted. True if anything was met or closed."""
    met = []
    # A timer missed already is met too: its alert closes below, and the desk no longer
    # reads "missed" beside a defender who has said they are safe.
    found = await _rows(session, defender, (*LIVE, CheckInState.missed))
    policy = await alerts.policy_for(session, defender)  # after the locks (module docstring)
    window = timedelta(seconds=policy.early_checkin_s)
    for row in found:
        early = row.due_at - window
        if row.state is CheckInState.missed and row.kind is not CheckInKind.timer:
            continue  # a routine moves on to its next day by itself
        if row.kind is CheckInKind.timer:
            _touch(session, row, CheckInState.met)
        elif row.state is CheckInState.reminded or now >= early:
            following = _routine_due(defender, row, max(now, row.due_at))
            if following is None:
                _touch(session, row, CheckInState.met)
            else:
                _arm(session, row, following, now, policy)
                _hold_if_paused(session, defender, row)
        else:
            continue
        met.append(row)
    await withdraw_reminders(session, [r.id for r in met])
    something = bool(met)
    defender.last_checkin_at = now
    alert = await alerts.open_alert(
        session, alerts.dedup_key(defender.id, AlertKind.missed_checkin)
    )
    if alert is None:
        return something
    duress = await alerts.open_alert(session, alerts.dedup_key(defender.id, AlertKind.duress))
    if duress is not None:
        # "I'm safe" given under coercion: the phone sees the usual answer, but nobody is
        # told all is clear; the missed check-in stays open beside the duress alert.
        session.add(actions.event(alert, "checked_in_under_duress", now, actor="defender"))
        return True
    if not alert.keep_open:
        await alert_handling.resolve(
            session, vault, alert=alert, outcome="safe", actor="defender", now=now
        )
        return True
    alert = await alerts.lock(session, alert)
    actions.wary(alert, defender)
    session.add(actions.event(alert, "checked_in", now, actor="defender"))
    stem = f"a:{alert.id.hex}:v{alert.version}"
    told = (await follow_ups.alerted(session, alert))["responder"]
    sparing = alert.defender_id if alert.do_not_contact else None  # never the device
    items = [
        actions.item(stem, who, notices.desk_kept_open(who.locale, defender.handle), alert)
        for who in await recipients.responders(session, told, sparing=sparing)
    ]
    await enqueue_many(session, vault, items, now=now)
    return True


async def extend(
    session: AsyncSession, *, defender: Defender, by: timedelta, now: datetime
) -> CheckIn | None:
    """Push the live one-off deadline back by ``by`` (from now, if it has already passed).
    Its reminders still waiting to go are withdrawn: they are about the deadline moved."""
    for row in await _rows(session, defender, LIVE):
        if row.kind is CheckInKind.timer:
            policy = await alerts.policy_for(session, defender)
            _arm(session, row, max(row.due_at, now) + by, now, policy)
            await withdraw_reminders(session, [row.id])
            return row
    return None


async def withdraw_reminders(session: AsyncSession, ids: Collection[uuid.UUID]) -> None:
    """The reminders of check-ins just met, paused, replaced or cancelled that are still
    waiting to go (a rate limit, a channel down): withdrawn, not sent after "I'm safe" was
    answered, nor during the pause (a resume asks again, at the deadline or at once), nor
    about a timer or routine the defender has ended."""
    if ids:
        keys = [OutboxMessage.idempotency_key.like(f"c:{i.hex}:%") for i in ids]
        await outbox.withdraw_waiting(session, OutboxMessage.recipient == "defender", or_(*keys))


async def pause(session: AsyncSession, *, defender: Defender, reason: str, now: datetime) -> None:
    """Hold armed check-ins, and withdraw their reminders still waiting (a pre-reminder held
    back used to reach the phone after the pause). A deadline already passed (reminder sent)
    is not paused: only "I'm safe" stops that one, so a seized phone cannot silence an
    escalation by pausing."""
    held = []
    for row in await _rows(session, defender, (CheckInState.armed,)):
        if row.due_at <= now:  # due, and the sweep has not got to it yet
            continue
        row.paused_reason = reason[:24]
        _touch(session, row, CheckInState.paused)
        held.append(row.id)
    await withdraw_reminders(session, held)
    if defender.status is DefenderStatus.active:
        defender.status = DefenderStatus.paused


async def resume(session: AsyncSession, *, defender: Defender, now: datetime) -> None:
    """Re-arm paused check-ins: a routine at its next occurrence, a timer if still ahead."""
    found = await _rows(session, defender, (CheckInState.paused,))
    policy = await alerts.policy_for(session, defender)  # after the locks (module docstring)
    for row in found:
        row.paused_reason = None
        due = _routine_due(defender, row, now) if row.kind is CheckInKind.routine else row.due_at
        if due is None or due <= now:
            _touch(session, row, CheckInState.cancelled)
        else:
            _arm(session, row, due, now, policy)
    if defender.status is DefenderStatus.paused:
        defender.status = DefenderStatus.active


def _hold_if_paused(session: AsyncSession, defender: Defender, row: CheckIn) -> None:
    """A routine re-armed while its defender is paused (the reminder that was out when they
    paused, answered or missed) waits for the resume, as the rest of their check-ins do."""
    if defender.status is DefenderStatus.paused and row.state is CheckInState.armed:
        row.paused_reason = HELD
        _touch(session, row, CheckInState.paused)


async def resume_held(
    session: AsyncSession,
    *,
    defender: Defender,
    now: datetime,
    reasons: tuple[str, ...] | None = None,
) -> None:
    """Re-arm the defender's check-ins paused for one of ``reasons``, or for any reason (the
    desk's resume: it sets the defender active, so none may stay paused, the defender's own
    pause included): a deadline that passed during the pause is asked now (due at once, with
    the usual grace), never counted as missed, and a deadline still ahead keeps its time."""
    found = await _rows(session, defender, (CheckInState.paused,))
    policy = await alerts.policy_for(session, defender)  # after the locks (module docstring)
    for row in found:
        if reasons is None or row.paused_reason in reasons:
            row.paused_reason = None
            _arm(session, row, max(row.due_at, now), now, policy)


async def move_zone(session: AsyncSession, *, defender: Defender, now: datetime) -> None:
    """The defender's zone changed (``defender.timezone`` already set): an armed routine not
    yet due moves to the next occurrence of its local time in the new zone if that comes
    sooner. Never later: a settings change (made by whoever holds the phone) must not put off
    a deadline, and a deadline already passed (reminded, or due and not swept yet) keeps its
    course. The occurrences after it are in the new zone; the flow tells the defender when
    the next one is due."""
    found = await _rows(session, defender, (CheckInState.armed,))
    policy = await alerts.policy_for(session, defender)  # after the locks (module docstring)
    for row in found:
        if row.kind is not CheckInKind.routine or row.due_at <= now:
            continue
        due = _routine_due(defender, row, now)
        if due is not None and due < row.due_at:
            _arm(session, row, due, now, policy)


def _refresh(session: AsyncSession, row: CheckIn, policy: Policy, now: datetime) -> None:
    if (row.grace_s, row.pre_reminder_s) == (policy.grace_s, policy.pre_reminder_s):
        return
    pending = row.state is CheckInState.armed and now < row.next_action_at < row.due_at
    started = row.state is CheckInState.armed and row.due_at <= now
    grace = min(row.grace_s, policy.grace_s)
    _follow(row, policy)
    if pending:  # its pre-reminder has not gone out: it follows the new one
        row.next_action_at = first_action_at(row.due_at, row.pre_reminder_s, now)
    if started:  # due, not swept yet: its grace runs already and is never lengthened
        row.grace_s = grace
    _touch(session, row, row.state)


async def follow_policy(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    now: datetime,
    defender_id: uuid.UUID | None = None,
) -> None:
    """After an organisation's policies change (one edited, made the default or deleted; a
    defender given another), each live check-in of its defenders (or of ``defender_id``)
    takes its defender's policy's grace and pre-reminder, which the sweep copies when it
    re-arms a routine. A deadline already passed keeps its course: a reminded row's alert
    stays at the time set (only its next occurrence follows), and a row due but not swept
    yet keeps the shorter grace. A paused row takes the policy when it is resumed."""
    await write_lock(session)
    who = [Defender.org_id == org_id]
    if defender_id is not None:
        who.append(Defender.id == defender_id)
    # The module's lock order (PostgreSQL): the defenders by id, then each one's rows in the
    # order ``_rows`` locks them; a check-in at the same moment waits, it does not deadlock.
    await _lock_people(session, *who)
    stmt = (
        select(CheckIn, Defender)
        .join(Defender, Defender.id == CheckIn.defender_id)
        .where(*who, CheckIn.state.in_(LIVE))
        .order_by(CheckIn.defender_id, CheckIn.due_at, CheckIn.id)
        .execution_options(populate_existing=True)
    )
    found = list(await session.execute(locked(stmt, session, of=CheckIn.__table__)))
    people = {d.id: d for _, d in found}
    policies = await alerts.policies_for(session, people.values())
    for row, _ in found:
        _refresh(session, row, policies[row.defender_id], now)


async def next_due(session: AsyncSession, *, defender: Defender) -> datetime | None:
    stmt = select(func.min(CheckIn.due_at)).where(
        CheckIn.defender_id == defender.id, CheckIn.state.in_(LIVE)
    )
    return (await session.execute(stmt)).scalar_one_or_none()
