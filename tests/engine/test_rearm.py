"""A routine follows the defender's zone and policy as they change, and never postpones a
deadline already passed (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from core import checkins, desk_defenders
from core.db import transaction
from core.models import AlertState, CheckIn, CheckInState, EscalationPolicy
from core.sweep import Sweep
from tests.engine.conftest import T0, World, alert_of
from tests.engine.test_checkins import rows

SEC, MIN, DAY = timedelta(seconds=1), timedelta(minutes=1), timedelta(days=1)
DUE = T0.replace(hour=20)  # the routine's first deadline: 20:00 in the defender's zone (UTC)
STRICT = {"grace_s": 300, "pre_reminder_s": 1800}


async def routine(world: World) -> None:
    async with transaction(world.sessions) as s:
        row = await checkins.set_routine(
            s, defender=await world.defender(s), local_time=time(20, 0), days="0123456", now=T0
        )
        assert (row.due_at, row.grace_s, row.pre_reminder_s) == (DUE, 900, 600)


async def add_policy(
    world: World, steps: dict[str, Any], *, default: bool = True
) -> EscalationPolicy:
    async with transaction(world.sessions) as s:
        policy = EscalationPolicy(
            org_id=world.org_id, name=f"p{len(steps)}", steps=steps, is_default=default, version=1
        )
        s.add(policy)
    return policy


async def only_row(world: World) -> CheckIn:
    (row,) = await rows(world)
    return row


async def test_it_applies_an_edited_grace_to_the_routines_next_deadline(
    world: World, sweep: Sweep
) -> None:
    await routine(world)
    await add_policy(world, STRICT)  # the desk shortens the grace of its default policy
    async with transaction(world.sessions) as s:
        await checkins.follow_policy(s, org_id=world.org_id, now=T0 + MIN)
    row = await only_row(world)
    assert (row.grace_s, row.pre_reminder_s, row.next_action_at) == (300, 1800, DUE - 30 * MIN)
    await sweep.run(DUE - 30 * MIN)
    await sweep.run(DUE)
    await sweep.run(DUE + 5 * MIN - SEC)
    assert await alert_of(world) is None
    await sweep.run(DUE + 5 * MIN)
    assert await alert_of(world) is not None  # 5 minutes after the deadline, not 15
    row = await only_row(world)
    assert (row.state, row.due_at, row.grace_s) == (CheckInState.armed, DUE + DAY, 300)


async def test_it_never_postpones_a_grace_already_running(world: World, sweep: Sweep) -> None:
    await routine(world)
    await sweep.run(DUE - 10 * MIN)
    await sweep.run(DUE)  # reminded: the alert opens at DUE + 15 min
    await add_policy(world, {"grace_s": 3600, "pre_reminder_s": None})
    async with transaction(world.sessions) as s:
        await checkins.follow_policy(s, org_id=world.org_id, now=DUE + MIN)
    await sweep.run(DUE + 15 * MIN)
    alert = await alert_of(world)
    assert alert is not None and alert.state is AlertState.triggered
    row = await only_row(world)  # the next occurrence follows the new policy
    assert (row.due_at, row.next_action_at, row.grace_s) == (DUE + DAY, DUE + DAY, 3600)


async def test_it_takes_the_current_policy_when_the_defender_checks_in(
    world: World, sweep: Sweep
) -> None:
    await routine(world)
    await add_policy(world, STRICT)  # written without follow_policy: the row keeps 15 minutes
    async with transaction(world.sessions) as s:  # early: this occurrence is met
        d = await world.defender(s)
        assert await checkins.check_in(s, world.vault, defender=d, now=DUE - 30 * MIN)
    row = await only_row(world)
    assert (row.due_at, row.grace_s, row.pre_reminder_s) == (DUE + DAY, 300, 1800)
    await sweep.run(DUE + DAY)
    await sweep.run(DUE + DAY + 5 * MIN)
    assert await alert_of(world) is not None


async def test_it_applies_the_policy_the_desk_gives_a_defender(world: World) -> None:
    await routine(world)
    policy = await add_policy(world, STRICT, default=False)
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        assert await desk_defenders.set_policy(
            s, world.vault, defender=d, policy_id=policy.id, actor="test", now=T0 + MIN
        )
    assert (await only_row(world)).grace_s == 300
    async with transaction(world.sessions) as s:  # back to the organisation's default
        d = await world.defender(s)
        assert await desk_defenders.set_policy(
            s, world.vault, defender=d, policy_id=None, actor="test", now=T0 + 2 * MIN
        )
    assert (await only_row(world)).grace_s == 900


async def test_it_moves_a_routine_to_the_new_zone_unless_its_deadline_passed(
    world: World, sweep: Sweep
) -> None:
    bogota = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)  # Monday 20:00 in Bogotá
    madrid = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)  # Monday 20:00 in Madrid
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        d.timezone = "America/Bogota"
        await checkins.set_routine(s, defender=d, local_time=time(20, 0), days="0123456", now=T0)
        d.timezone = "Europe/Madrid"
        await checkins.move_zone(s, defender=d, now=T0)
    row = await only_row(world)
    assert (row.due_at, row.next_action_at) == (madrid, madrid - 10 * MIN)  # 6 hours sooner
    await sweep.run(madrid)  # reminded: the alert opens at 19:15 UTC
    async with transaction(world.sessions) as s:  # back to Bogotá during the grace
        d = await world.defender(s)
        d.timezone = "America/Bogota"
        await checkins.move_zone(s, defender=d, now=madrid + MIN)
    row = await only_row(world)
    assert (row.state, row.due_at) == (CheckInState.reminded, madrid)
    await sweep.run(madrid + 15 * MIN)
    assert await alert_of(world) is not None
    row = await only_row(world)  # the occurrence after it is in the new zone
    assert (row.state, row.due_at) == (CheckInState.armed, bogota)
    async with transaction(world.sessions) as s:  # not due yet, but never put off
        d = await world.defender(s)
        d.timezone = "Europe/Madrid"
        await checkins.move_zone(s, defender=d, now=madrid + 20 * MIN)
    assert (await only_row(world)).due_at == bogota  # not madrid + DAY, 18 hours later
    await sweep.run(bogota)
    await sweep.run(bogota + 15 * MIN)
    row = await only_row(world)  # and the occurrence after it is Madrid's 20:00
    assert (row.state, row.due_at) == (CheckInState.armed, madrid + DAY)


async def test_it_never_lengthens_the_grace_of_a_deadline_not_swept_yet(
    world: World, sweep: Sweep
) -> None:
    await routine(world)
    await add_policy(world, {"grace_s": 3600})
    async with transaction(world.sessions) as s:  # the deadline passed; the sweep is late
        await checkins.follow_policy(s, org_id=world.org_id, now=DUE + MIN)
    assert (await only_row(world)).grace_s == 900
    await sweep.run(DUE + MIN)
    await sweep.run(DUE + 15 * MIN)
    assert await alert_of(world) is not None
