"""The pure decisions: every transition of a check-in and an alert, and routines across DST."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from core.escalation import (
    DEFAULT_POLICY,
    Act,
    Policy,
    alert_step,
    checkin_step,
    first_action_at,
    next_occurrence,
    opening,
    parse_days,
)
from core.models import AlertKind, AlertState, CheckInKind, CheckInState

T = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def step(state: CheckInState, now: datetime, kind: CheckInKind = CheckInKind.timer, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "kind": kind,
        "state": state,
        "due_at": T,
        "grace_s": 900,
        "pre_reminder_s": 600,
        "next_due": None,
        "now": now,
    }
    return checkin_step(**{**args, **kw})  # type: ignore[arg-type]


def test_it_pre_reminds_then_reminds_then_opens_an_alert() -> None:
    pre = step(CheckInState.armed, T - 10 * MIN)
    assert pre is not None and pre.acts == (Act.pre_remind,) and pre.next_action_at == T
    due = step(CheckInState.armed, T)
    assert due is not None and due.acts == (Act.remind,) and due.state is CheckInState.reminded
    assert due.next_action_at == T + 15 * MIN
    miss = step(CheckInState.reminded, T + 15 * MIN)
    assert (
        miss is not None and miss.acts == (Act.open_alert,) and miss.state is CheckInState.missed
    )


def test_it_never_skips_the_alert_when_the_sweep_is_late() -> None:
    late = step(CheckInState.armed, T + 3 * 60 * MIN)  # the worker was down for hours
    assert late is not None and late.acts == (Act.open_alert,)


def test_it_rolls_a_missed_routine_to_its_next_occurrence() -> None:
    nxt = T + timedelta(days=1)
    miss = step(CheckInState.reminded, T + 20 * MIN, kind=CheckInKind.routine, next_due=nxt)
    assert miss is not None and miss.acts == (Act.open_alert,)
    assert (miss.state, miss.due_at, miss.next_action_at) == (
        CheckInState.armed,
        nxt,
        nxt - 10 * MIN,
    )


def test_it_skips_a_pre_reminder_that_is_already_past() -> None:
    assert first_action_at(T, 600, T - 5 * MIN) == T
    assert first_action_at(T, None, T - 60 * MIN) == T
    assert first_action_at(T, 600, T - 60 * MIN) == T - 10 * MIN


def test_it_opens_panic_and_duress_at_the_desk_and_contacts() -> None:
    for kind in (AlertKind.panic, AlertKind.duress):
        first = opening(kind, DEFAULT_POLICY, T)
        assert set(first.acts) == {Act.notify_desk, Act.notify_contacts}
        assert first.desk_event == "alert.triggered" and first.next_step_at == T + 15 * MIN
    missed = opening(AlertKind.missed_checkin, DEFAULT_POLICY, T)
    assert missed.acts == (Act.remind_again, Act.notify_contacts) and missed.desk_event is None


def test_it_goes_to_the_desk_then_repeats_then_retriggers_after_the_ack_timeout() -> None:
    kw = {"kind": AlertKind.missed_checkin, "policy": DEFAULT_POLICY, "now": T}
    desk = alert_step(state=AlertState.triggered, step=1, **kw)  # type: ignore[arg-type]
    assert desk is not None and desk.desk_event == "alert.triggered" and desk.step == 2
    again = alert_step(state=AlertState.triggered, step=2, **kw)  # type: ignore[arg-type]
    assert again is not None and (again.reason, again.desk_event) == ("repeat", "alert.escalated")
    timeout = alert_step(state=AlertState.acknowledged, step=3, **kw)  # type: ignore[arg-type]
    assert timeout is not None and timeout.state is AlertState.triggered
    assert timeout.reason == "ack_timeout" and timeout.next_step_at == T + 15 * MIN
    assert alert_step(state=AlertState.resolved, step=3, **kw) is None  # type: ignore[arg-type]


def test_it_reads_old_and_partial_policies_and_refuses_nonsense() -> None:
    assert Policy.from_json({"grace_s": 60, "unknown": 1}) == Policy(grace_s=60)
    assert Policy.from_json(None) == DEFAULT_POLICY
    with pytest.raises(ValueError):
        Policy.from_json({"repeat_s": 0})  # a desk flood
    with pytest.raises(ValueError):
        Policy.from_json({"grace_s": -1})


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # Madrid, daily 20:00: CET (UTC+1) before 29 March 2026, CEST (UTC+2) after.
        (datetime(2026, 3, 28, 12, 0, tzinfo=UTC), datetime(2026, 3, 28, 19, 0, tzinfo=UTC)),
        (datetime(2026, 3, 28, 19, 0, tzinfo=UTC), datetime(2026, 3, 29, 18, 0, tzinfo=UTC)),
        (datetime(2026, 10, 24, 19, 0, tzinfo=UTC), datetime(2026, 10, 25, 19, 0, tzinfo=UTC)),
    ],
)
def test_it_keeps_a_routine_at_local_time_across_dst(after: datetime, expected: datetime) -> None:
    assert next_occurrence(time(20, 0), "0123456", "Europe/Madrid", after) == expected


def test_it_moves_a_skipped_time_forward_and_fires_a_repeated_time_once() -> None:
    ny = "America/New_York"  # 8 March 2026: 02:00 -> 03:00; 1 November: 02:00 -> 01:00
    gap = next_occurrence(time(2, 30), "0123456", ny, datetime(2026, 3, 8, 5, 0, tzinfo=UTC))
    assert gap == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT
    first = next_occurrence(time(1, 30), "0123456", ny, datetime(2026, 11, 1, 4, 0, tzinfo=UTC))
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, the first one
    after = next_occurrence(time(1, 30), "0123456", ny, first)
    assert after == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)  # not 01:30 EST the same night


def test_it_honours_the_days_of_a_routine() -> None:
    monday = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)  # after Monday's 20:00 UTC
    assert next_occurrence(time(20, 0), "04", "UTC", monday) == datetime(
        2026, 3, 6, 20, 0, tzinfo=UTC
    )
    assert parse_days("0123456") == frozenset(range(7))
    for bad in ("", "7", "00", "mon"):
        with pytest.raises(ValueError):
            parse_days(bad)
