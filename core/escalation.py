"""Pure escalation decisions: (check-in or alert, policy, now) -> what to do next.

Nothing here reads the clock, the database or a channel; the scheduler applies the decisions.
The ladder (DESIGN.md, "Escalation semantics"), all durations per organisation and editable:

    T - pre_reminder   optional pre-reminder to the defender
    T                  reminder with a one-tap "I'm safe"
    T + grace          missed_checkin alert opens: second reminder + trusted contacts
    + desk_after       the desk: on-duty responders + the external desk webhook
    every repeat       the desk again, until a responder acknowledges
    ack + ack_timeout  unresolved: re-trigger

Panic and duress open at the desk step, with the trusted contacts told at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from core.models import AlertKind, AlertState, CheckInKind, CheckInState


@dataclass(frozen=True)
class Policy:
    pre_reminder_s: int | None = 10 * 60
    grace_s: int = 15 * 60
    desk_after_s: int = 15 * 60
    repeat_s: int = 15 * 60
    ack_timeout_s: int = 60 * 60
    # A check-in this long before a routine's deadline counts for that occurrence.
    early_checkin_s: int = 60 * 60

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Policy:
        """Unknown keys are ignored, missing ones take the default: old snapshots stay valid."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in (data or {}).items() if k in known}
        policy = cls(**values)
        durations = [policy.grace_s, policy.desk_after_s, policy.ack_timeout_s]
        if any(not isinstance(v, int) or v < 0 for v in durations) or policy.repeat_s < 60:
            raise ValueError("escalation policy durations must be whole seconds (repeat >= 60)")
        return policy

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_POLICY = Policy()


class Act(StrEnum):
    pre_remind = "pre_remind"  # the defender, before the deadline
    remind = "remind"  # the defender, at the deadline
    open_alert = "open_alert"  # missed_checkin
    remind_again = "remind_again"  # the defender, when the alert opens
    notify_contacts = "notify_contacts"
    notify_desk = "notify_desk"  # responders and webhooks; "alert.triggered" the first time


@dataclass(frozen=True)
class CheckInStep:
    acts: tuple[Act, ...]
    state: CheckInState
    due_at: datetime
    next_action_at: datetime


def first_action_at(due_at: datetime, pre_reminder_s: int | None, now: datetime) -> datetime:
    """When the sweep first looks at a deadline: the pre-reminder, unless it is already past."""
    if pre_reminder_s:
        pre = due_at - timedelta(seconds=pre_reminder_s)
        if pre > now:
            return pre
    return due_at


def checkin_step(
    *,
    kind: CheckInKind,
    state: CheckInState,
    due_at: datetime,
    grace_s: int,
    pre_reminder_s: int | None,
    next_due: datetime | None,
    now: datetime,
) -> CheckInStep | None:
    """The transition of a live check-in whose next action is due; ``next_due`` is a routine's
    following occurrence. A late sweep skips the pre-reminder and never skips the alert."""
    miss_at = due_at + timedelta(seconds=grace_s)
    if state is CheckInState.armed and now < due_at:
        return CheckInStep((Act.pre_remind,), state, due_at, due_at)
    if state is CheckInState.armed and now < miss_at:
        return CheckInStep((Act.remind,), CheckInState.reminded, due_at, miss_at)
    # A reminded check-in comes due at the end of its grace, or sooner when the defender cannot
    # get the reminder (core.fallback.miss_sooner): either way, it is missed now.
    if state is CheckInState.reminded or (state is CheckInState.armed and now >= miss_at):
        acts = (Act.open_alert,)  # which reminds the defender again
        if kind is CheckInKind.routine and next_due is not None:
            nxt = first_action_at(next_due, pre_reminder_s, now)
            return CheckInStep(acts, CheckInState.armed, next_due, nxt)
        return CheckInStep(acts, CheckInState.missed, due_at, miss_at)
    return None


@dataclass(frozen=True)
class AlertStep:
    acts: tuple[Act, ...]
    state: AlertState
    step: int
    next_step_at: datetime | None
    reason: str  # for the timeline: "opened", "desk", "repeat", "ack_timeout"
    desk_event: str | None = None  # the webhook event type when the desk is notified


def opening(kind: AlertKind, policy: Policy, now: datetime) -> AlertStep:
    """Step 1 of a new alert. Panic and duress go to the desk and contacts at once."""
    acts: tuple[Act, ...]
    if kind is AlertKind.missed_checkin:
        after = timedelta(seconds=policy.desk_after_s)
        acts = (Act.remind_again, Act.notify_contacts)
        return AlertStep(acts, AlertState.triggered, 1, now + after, "opened")
    if kind in (AlertKind.panic, AlertKind.duress):
        acts = (Act.notify_desk, Act.notify_contacts)
    else:  # a report: the desk alone
        acts = (Act.notify_desk,)
    after = timedelta(seconds=policy.repeat_s)
    return AlertStep(acts, AlertState.triggered, 1, now + after, "opened", "alert.triggered")


def desk_told(kind: AlertKind, step: int) -> bool:
    """Whether the desk step has been taken (a missed check-in reaches it at step 2)."""
    return step >= (2 if kind is AlertKind.missed_checkin else 1)


def alert_step(
    *, kind: AlertKind, state: AlertState, step: int, policy: Policy, now: datetime
) -> AlertStep | None:
    """The next step of an open alert whose ``next_step_at`` has come."""
    repeat = now + timedelta(seconds=policy.repeat_s)
    if state is AlertState.triggered:
        if not desk_told(kind, step):
            return AlertStep(
                (Act.notify_desk,), state, step + 1, repeat, "desk", "alert.triggered"
            )
        return AlertStep((Act.notify_desk,), state, step + 1, repeat, "repeat", "alert.escalated")
    if state is AlertState.acknowledged:  # the ack timeout ran out: re-trigger
        acts = (Act.notify_desk,)
        triggered = AlertState.triggered
        return AlertStep(acts, triggered, step + 1, repeat, "ack_timeout", "alert.escalated")
    return None


def ack_deadline(policy: Policy, now: datetime) -> datetime:
    return now + timedelta(seconds=policy.ack_timeout_s)


def parse_days(days: str) -> frozenset[int]:
    """ "0123456" (Monday = 0) -> weekdays; raises ValueError on anything else."""
    found = frozenset(int(c) for c in days if c.isdigit() and c in "0123456")
    if not found or len(found) != len(days):
        raise ValueError("days must be distinct digits 0-6 (Monday = 0)")
    return found


def next_occurrence(local_time: time, days: str, zone: str, after: datetime) -> datetime:
    """The first instant strictly after ``after`` when it is ``local_time`` on one of ``days``
    in ``zone``. A time skipped by a DST change moves forward by the gap (02:30 -> 03:30);
    a repeated time fires once, at its first occurrence."""
    tz = ZoneInfo(zone)
    weekdays = parse_days(days)
    start: date = after.astimezone(tz).date()
    for offset in range(8):
        day = start + timedelta(days=offset)
        if day.weekday() not in weekdays:
            continue
        candidate = datetime.combine(day, local_time.replace(tzinfo=None), tzinfo=tz)
        instant = candidate.astimezone(UTC)
        if instant > after:
            return instant
    raise AssertionError("unreachable: a week always holds one of the days")
