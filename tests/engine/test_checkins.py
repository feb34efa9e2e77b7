"""Check-ins as flows use them, swept with the clock in the test's hands (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import select

from core import checkins, desk_defenders, timers
from core.db import transaction
from core.messages import WITHDRAWN
from core.models import (
    AlertState,
    CheckIn,
    CheckInKind,
    CheckInState,
    Defender,
    DefenderStatus,
    OutboxMessage,
)
from core.sweep import Sweep, claim
from tests.engine.conftest import T0, World, alert_of, outbox

MIN, DAY = timedelta(minutes=1), timedelta(days=1)


async def rows(world: World) -> list[CheckIn]:
    async with world.sessions() as s:
        stmt = (
            select(CheckIn)
            .where(CheckIn.defender_id == world.defender_id)
            .order_by(CheckIn.created_at)
        )
        return list((await s.execute(stmt)).scalars())


async def test_it_replaces_the_live_timer(world: World) -> None:
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.arm_timer(s, defender=d, due_at=T0 + 60 * MIN, now=T0)
        await checkins.arm_timer(s, defender=d, due_at=T0 + 90 * MIN, now=T0)
        assert await checkins.next_due(s, defender=d) == T0 + 90 * MIN
    assert [r.state for r in await rows(world)] == [CheckInState.cancelled, CheckInState.armed]


async def test_it_keeps_a_routine_at_local_time_across_dst(world: World, sweep: Sweep) -> None:
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # Madrid springs forward on 29 March
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        d.timezone = "Europe/Madrid"
        routine = await checkins.set_routine(
            s, defender=d, local_time=time(20, 0), days="0123456", now=start
        )
        assert routine.due_at == datetime(2026, 3, 28, 19, 0, tzinfo=UTC)
    for day, due in ((28, 19), (29, 18), (30, 18)):  # 20:00 CET, then 20:00 CEST
        at = datetime(2026, 3, day, due, 0, tzinfo=UTC)
        await sweep.run(at - 10 * MIN)
        await sweep.run(at)
        async with transaction(world.sessions) as s:
            assert await checkins.check_in(
                s, world.vault, defender=await world.defender(s), now=at + MIN
            )
        (row,) = await rows(world)
        assert row.state is CheckInState.armed and row.due_at.hour == (18 if day >= 28 else 19)
    assert await alert_of(world) is None
    assert len([m for m in await outbox(world) if m.person == "defender"]) == 6


async def test_it_escalates_a_missed_routine_once_and_arms_the_next_day(
    world: World, sweep: Sweep
) -> None:
    async with transaction(world.sessions) as s:
        await checkins.set_routine(
            s, defender=await world.defender(s), local_time=time(20, 0), days="0123456", now=T0
        )
    due = T0.replace(hour=20)
    for minutes in range(-10, 40, 5):  # the sweep runs often; the alert opens once
        await sweep.run(due + minutes * MIN)
    alert = await alert_of(world)
    assert alert is not None and alert.state is AlertState.triggered
    (row,) = await rows(world)
    assert (row.state, row.due_at) == (CheckInState.armed, due + timedelta(days=1))


async def test_it_meets_a_timer_and_keeps_only_the_last_check_in_time(
    world: World, sweep: Sweep
) -> None:
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0 + 60 * MIN, now=T0)
    for n in range(5):
        async with transaction(world.sessions) as s:
            met = await checkins.check_in(
                s, world.vault, defender=await world.defender(s), now=T0 + n * MIN
            )
            assert met is (n == 0)
    await sweep.run(T0 + 300 * MIN)
    assert [r.state for r in await rows(world)] == [CheckInState.met]
    async with world.sessions() as s:
        d = await s.get(Defender, world.defender_id)
        assert d is not None and d.last_checkin_at == T0 + 4 * MIN  # overwritten, no history (R24)
    assert await outbox(world) == []


async def test_it_extends_and_pauses_only_what_has_not_fallen_due(
    world: World, sweep: Sweep
) -> None:
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.arm_timer(s, defender=d, due_at=T0 + 60 * MIN, now=T0)
        row = await checkins.extend(s, defender=d, by=30 * MIN, now=T0 + 5 * MIN)
        assert row is not None and row.due_at == T0 + 90 * MIN
        await checkins.pause(s, defender=d, reason="travel", now=T0 + 6 * MIN)
        assert d.status is DefenderStatus.paused
    await sweep.run(T0 + 200 * MIN)
    assert await outbox(world) == [] and (await rows(world))[0].state is CheckInState.paused
    async with transaction(world.sessions) as s:
        await checkins.resume(s, defender=await world.defender(s), now=T0 + 201 * MIN)
    assert (await rows(world))[0].state is CheckInState.cancelled  # its deadline passed meanwhile

    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.arm_timer(s, defender=d, due_at=T0 + 300 * MIN, now=T0 + 201 * MIN)
    await sweep.run(T0 + 300 * MIN)  # the reminder went out
    async with transaction(world.sessions) as s:  # a seized phone cannot pause this one
        await checkins.pause(s, defender=await world.defender(s), reason="x", now=T0 + 301 * MIN)
    await sweep.run(T0 + 315 * MIN)
    alert = await alert_of(world)
    assert alert is not None and alert.state is AlertState.triggered


async def test_it_drops_a_claimed_step_when_the_defender_checks_in_meanwhile(
    world: World, sweep: Sweep
) -> None:
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * MIN)
    now = T0 + 16 * MIN
    async with transaction(world.sessions) as s:  # the sweep claims the overdue timer …
        due = CheckIn.state.in_(checkins.LIVE) & (CheckIn.next_action_at <= now)
        claimed = await claim(s, CheckIn, due, now=now, owner=sweep.owner, lease_s=30, limit=10)
    async with transaction(world.sessions) as s:  # … the defender checks in …
        await checkins.check_in(s, world.vault, defender=await world.defender(s), now=now)
    stale = await timers.apply(world.sessions, world.vault, claimed, owner=sweep.owner, now=now)
    assert stale == []  # … and the stale decision writes nothing
    assert await alert_of(world) is None
    assert [r.state for r in await rows(world)] == [CheckInState.met]


async def test_it_routes_a_kind_per_row(world: World) -> None:
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.arm_timer(s, defender=d, due_at=T0 + 60 * MIN, now=T0)
        await checkins.set_routine(s, defender=d, local_time=time(8, 0), days="01234", now=T0)
        await checkins.clear_routine(s, defender=d)
    kinds = {(r.kind, r.state) for r in await rows(world)}
    assert kinds == {
        (CheckInKind.timer, CheckInState.armed),
        (CheckInKind.routine, CheckInState.cancelled),
    }


async def test_a_reminder_still_waiting_when_they_check_in_never_goes(
    world: World, sweep: Sweep
) -> None:
    """The reminder of a deadline, held back (a rate limit, a channel down), would reach the
    phone after "I'm safe" was answered: it is withdrawn with the check-in."""
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * MIN)
    await sweep.run(T0)
    (reminder,) = [m for m in await outbox(world) if m.person == "defender"]
    assert reminder.key.startswith("c:") and reminder.state == "pending"
    async with transaction(world.sessions) as s:
        assert await checkins.check_in(s, world.vault, defender=await world.defender(s), now=T0)
    (withdrawn,) = [m for m in await outbox(world) if m.person == "defender"]
    assert (withdrawn.key, withdrawn.state, withdrawn.text) == (reminder.key, "failed", "")
    async with world.sessions() as s:
        row = (await s.execute(select(OutboxMessage))).scalar_one()
        assert row.last_error == WITHDRAWN


async def test_a_missed_timer_is_met_by_the_check_in_that_closes_its_alert(
    world: World, sweep: Sweep
) -> None:
    """Missed, the timer stayed "missed" after "I'm safe" closed its alert: the desk read a
    defender who had said they were safe as one who missed a check-in."""
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * MIN)
    for minutes in (0, 20, 40):
        await sweep.run(T0 + minutes * MIN)
    assert [r.state for r in await rows(world)] == [CheckInState.missed]
    alert = await alert_of(world)
    assert alert is not None and alert.state is AlertState.triggered
    async with transaction(world.sessions) as s:
        defender = await world.defender(s)
        assert await checkins.check_in(s, world.vault, defender=defender, now=T0 + 41 * MIN)
        assert (await desk_defenders.health_of(s, defender)).state == "no_checkin"  # not missed
    assert [r.state for r in await rows(world)] == [CheckInState.met]
    alert = await alert_of(world)
    assert alert is not None and alert.state is AlertState.resolved


async def _replace_timer(world: World, at: datetime) -> None:
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.arm_timer(s, defender=d, due_at=T0 + 120 * MIN, now=at)


async def _clear_routine(world: World, at: datetime) -> None:
    async with transaction(world.sessions) as s:
        await checkins.clear_routine(s, defender=await world.defender(s))


@pytest.mark.parametrize(
    ("kind", "at"),
    [("timer", T0 - 9 * MIN), ("timer", T0 + MIN), ("routine", T0 - 9 * MIN)],
)
async def test_a_reminder_still_waiting_when_they_end_the_check_in_never_goes(
    world: World, sweep: Sweep, kind: str, at: datetime
) -> None:
    """The reminder of a timer the defender replaced (its pre-reminder, or the deadline's
    reminder), or of a routine they cleared, held back (a rate limit, a channel down), still
    reached the phone later, asking "are you safe?" about a check-in they had ended. It is
    withdrawn with the change."""
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        if kind == "timer":
            await checkins.arm_timer(s, defender=d, due_at=T0, now=T0 - 60 * MIN)
        else:
            hour = time(T0.hour, T0.minute)
            await checkins.set_routine(
                s, defender=d, local_time=hour, days="0123456", now=T0 - DAY
            )
    await sweep.run(at)
    (reminder,) = [m for m in await outbox(world) if m.person == "defender"]
    assert reminder.key.startswith("c:") and reminder.state == "pending"
    await (_replace_timer if kind == "timer" else _clear_routine)(world, at)
    (withdrawn,) = [m for m in await outbox(world) if m.key == reminder.key]
    assert (withdrawn.state, withdrawn.text) == ("failed", "")
    async with world.sessions() as s:
        row = (
            await s.execute(
                select(OutboxMessage).where(OutboxMessage.idempotency_key == reminder.key)
            )
        ).scalar_one()
        assert row.last_error == WITHDRAWN
    assert CheckInState.cancelled in [r.state for r in await rows(world)]


@pytest.mark.parametrize(
    ("change", "at"),
    [("extend", T0 - 9 * MIN), ("extend", T0 + MIN), ("later", T0 - 9 * MIN)],
)
async def test_a_reminder_still_waiting_when_they_move_the_deadline_never_goes(
    world: World, sweep: Sweep, change: str, at: datetime
) -> None:
    """A pre-reminder ("due in 10 minutes") or the deadline's reminder held back (a rate limit,
    a channel down) reached the phone after the defender had extended the timer, or moved
    their routine to another time: it asked about a deadline no longer set. It is withdrawn
    with the change; the new deadline asks in its turn."""
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        if change == "extend":
            await checkins.arm_timer(s, defender=d, due_at=T0, now=T0 - 60 * MIN)
        else:
            noon = time(T0.hour, T0.minute)
            await checkins.set_routine(
                s, defender=d, local_time=noon, days="0123456", now=T0 - DAY
            )
    await sweep.run(at)
    (reminder,) = [m for m in await outbox(world) if m.person == "defender"]
    assert reminder.key.startswith("c:") and reminder.state == "pending"
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        if change == "extend":
            await checkins.extend(s, defender=d, by=30 * MIN, now=at)
        else:
            await checkins.set_routine(s, defender=d, local_time=time(13), days="0123456", now=at)
    (withdrawn,) = [m for m in await outbox(world) if m.key == reminder.key]
    assert (withdrawn.state, withdrawn.text) == ("failed", "")
    (row,) = await rows(world)
    assert row.state is CheckInState.armed and row.due_at > T0
    await sweep.run(row.due_at)
    asked = [m for m in await outbox(world) if m.person == "defender" and m.state == "pending"]
    assert len(asked) == 1 and asked[0].key != reminder.key, asked


async def test_a_pre_reminder_waiting_stays_when_the_routine_keeps_its_time(
    world: World, sweep: Sweep
) -> None:
    noon = time(T0.hour, T0.minute)
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.set_routine(s, defender=d, local_time=noon, days="0123456", now=T0 - DAY)
    await sweep.run(T0 - 9 * MIN)
    async with transaction(world.sessions) as s:  # only the days change: still due today
        d = await world.defender(s)
        await checkins.set_routine(s, defender=d, local_time=noon, days="01234", now=T0 - 9 * MIN)
    assert [m.state for m in await outbox(world) if m.person == "defender"] == ["pending"]
