"""Pausing check-ins, by the defender or by the desk, and resuming them: a pause never raises
an alarm by itself, and never silences one already running."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest

from core import checkins, desk_defenders
from core.db import transaction
from core.models import CheckInKind, CheckInState, DefenderStatus
from core.sweep import Sweep
from tests.engine.conftest import T0, World, alert_of, outbox
from tests.engine.test_checkins import rows

MIN, DAY = timedelta(minutes=1), timedelta(days=1)
DUE = T0.replace(hour=20)  # the routine's daily time, 20:00 UTC


async def routine(world: World) -> None:
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.set_routine(s, defender=d, local_time=time(20, 0), days="0123456", now=T0)


async def desk_pause(world: World, paused: bool, at: object) -> None:
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        done = await desk_defenders.set_paused(
            s, world.vault, defender=d, paused=paused, actor="test", now=at
        )
        assert done


async def test_resuming_after_a_long_desk_pause_asks_before_it_alarms(
    world: World, sweep: Sweep
) -> None:
    """The desk paused a defender for two days (travel) and resumes them: the routine's
    deadlines that passed meanwhile are not missed check-ins. The defender is asked to check
    in now, with the usual grace, and nobody is alerted unless that goes unanswered."""
    await routine(world)
    await desk_pause(world, True, T0 + MIN)
    back = DUE + 2 * DAY + 3 * 60 * MIN  # two days later, 23:00
    await desk_pause(world, False, back)
    await sweep.run(back)
    assert await alert_of(world) is None
    (row,) = await rows(world)
    assert row.state is CheckInState.reminded  # asked now
    async with transaction(world.sessions) as s:
        assert await checkins.check_in(s, world.vault, defender=await world.defender(s), now=back)
    (row,) = await rows(world)
    assert (row.state, row.due_at) == (CheckInState.armed, DUE + 3 * DAY)
    for later in (5, 30, 90):
        await sweep.run(back + later * MIN)
    assert await alert_of(world) is None
    assert [m.person for m in await outbox(world)] == ["defender"]  # the one reminder


async def test_a_resumed_deadline_left_unanswered_still_alarms(world: World, sweep: Sweep) -> None:
    await routine(world)
    await desk_pause(world, True, T0 + MIN)
    back = DUE + 2 * DAY + 3 * 60 * MIN
    await desk_pause(world, False, back)
    for later in (0, 5, 30, 60, 90):
        await sweep.run(back + later * MIN)
    alert = await alert_of(world)
    assert alert is not None  # asked, no answer within the grace: escalated as ever


async def test_a_routine_answered_during_the_defenders_pause_stays_paused(
    world: World, sweep: Sweep
) -> None:
    """The defender pauses while today's reminder is already out (that one is not paused: a
    seized phone must not silence it). They answer it; the routine's next day must then wait
    for their resume, not raise a missed check-in while they are paused."""
    await routine(world)
    await sweep.run(DUE)  # reminded
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.pause(s, defender=d, reason="travel", now=DUE + MIN)
        assert d.status is DefenderStatus.paused
    (row,) = await rows(world)
    assert row.state is CheckInState.reminded  # still running
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        assert await checkins.check_in(s, world.vault, defender=d, now=DUE + 2 * MIN)
    (row,) = await rows(world)
    assert row.state is CheckInState.paused
    for day in (1, 2):
        for minutes in (0, 30, 60):
            await sweep.run(DUE + day * DAY + minutes * MIN)
    assert await alert_of(world) is None
    async with transaction(world.sessions) as s:  # back: the routine runs again
        await checkins.resume(
            s, defender=await world.defender(s), now=DUE + 2 * DAY + 2 * 60 * MIN
        )
    (row,) = await rows(world)
    assert (row.kind, row.state, row.due_at) == (
        CheckInKind.routine,
        CheckInState.armed,
        DUE + 3 * DAY,
    )


async def test_a_routine_missed_during_the_defenders_pause_alarms_once_then_waits(
    world: World, sweep: Sweep
) -> None:
    """The reminder that was out when they paused goes unanswered: that alarm is raised (a
    pause never silences one running), and the routine then waits for their resume."""
    await routine(world)
    await sweep.run(DUE)
    async with transaction(world.sessions) as s:
        await checkins.pause(s, defender=await world.defender(s), reason="travel", now=DUE + MIN)
    for minutes in (30, 60, 90):
        await sweep.run(DUE + minutes * MIN)
    first = await alert_of(world)
    assert first is not None
    (row,) = await rows(world)
    assert row.state is CheckInState.paused
    async with transaction(world.sessions) as s:  # the desk resolves it
        from core import alert_handling

        alert = await s.get(type(first), first.id)
        await alert_handling.resolve(
            s, world.vault, alert=alert, outcome="safe", actor="desk", now=DUE + DAY
        )
    for minutes in (0, 30, 60):
        await sweep.run(DUE + DAY + minutes * MIN)
    assert (await alert_of(world)).id == first.id  # no new alarm while paused


async def test_a_routine_set_during_the_defenders_pause_waits_for_their_resume(
    world: World, sweep: Sweep
) -> None:
    """Set while paused, a routine did run its first occurrence (a reminder, then an alarm
    to the contacts, of someone who said they were away), and only then waited. It now
    waits from the start, and the resume arms it at its next occurrence."""
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.pause(s, defender=d, reason="travel", now=T0)
    await routine(world)
    (row,) = await rows(world)
    assert row.state is CheckInState.paused
    for minutes in (0, 30, 60, 90):
        await sweep.run(DUE + minutes * MIN)
    assert await alert_of(world) is None
    assert await outbox(world) == []
    async with transaction(world.sessions) as s:
        await checkins.resume(s, defender=await world.defender(s), now=DUE + 2 * 60 * MIN)
    (row,) = await rows(world)
    assert (row.state, row.due_at) == (CheckInState.armed, DUE + DAY)


async def test_a_routine_changed_during_the_pause_stays_held(world: World, sweep: Sweep) -> None:
    """A routine whose reminder was due when they paused (not held: the sweep had not got to
    it) and then changed while paused is held too, not re-armed behind the pause."""
    await routine(world)
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.pause(s, defender=d, reason="travel", now=DUE)  # due: not held
    (row,) = await rows(world)
    assert row.state is CheckInState.armed
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        await checkins.set_routine(s, defender=d, local_time=time(21, 0), days="0123456", now=DUE)
    (row,) = await rows(world)
    assert row.state is CheckInState.paused
    for minutes in (60, 90, 120, 150):
        await sweep.run(DUE + minutes * MIN)
    assert await alert_of(world) is None


async def test_the_desks_resume_of_a_defender_who_paused_themselves_rearms_their_routine(
    world: World, sweep: Sweep
) -> None:
    """The defender paused their own check-ins (travel) and asked the desk to resume them.
    The desk's resume set them active while their routine stayed paused: shown as watched,
    nothing was ever asked again, and a missed deadline escalated to nobody."""
    await routine(world)
    async with transaction(world.sessions) as s:
        await checkins.pause(s, defender=await world.defender(s), reason="travel", now=T0)
    await desk_pause(world, False, T0 + 60 * MIN)
    async with world.sessions() as s:
        assert (await world.defender(s)).status is DefenderStatus.active
    (row,) = await rows(world)
    assert (row.state, row.due_at) == (CheckInState.armed, DUE)
    for minutes in (0, 15, 30, 45):
        await sweep.run(DUE + minutes * MIN)
    assert await alert_of(world) is not None


@pytest.mark.parametrize(
    ("by", "at"), [("defender", DUE - 9 * MIN), ("desk", DUE - 9 * MIN), ("desk", DUE + MIN)]
)
async def test_a_reminder_still_waiting_when_they_pause_never_goes(
    world: World, sweep: Sweep, by: str, at: datetime
) -> None:
    """The pre-reminder (or, for the desk's pause, the deadline's reminder) held back (a rate
    limit, a channel down) still reached the phone after the pause, asking to check in someone
    who had said they were away. It is withdrawn with the pause; the resume asks again."""
    await routine(world)
    await sweep.run(at - MIN)
    (reminder,) = await outbox(world)
    assert reminder.key.startswith("c:") and reminder.state == "pending"
    if by == "defender":
        async with transaction(world.sessions) as s:
            await checkins.pause(s, defender=await world.defender(s), reason="travel", now=at)
    else:
        await desk_pause(world, True, at)
    (withdrawn,) = await outbox(world)
    assert (withdrawn.key, withdrawn.state, withdrawn.text) == (reminder.key, "failed", "")
    await desk_pause(world, False, DUE + 2 * MIN)  # asked at once (the deadline passed)
    await sweep.run(DUE + 2 * MIN)
    asked = [m for m in await outbox(world) if m.key != reminder.key]
    assert [(m.person, m.state) for m in asked] == [("defender", "pending")], asked
