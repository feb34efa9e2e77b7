"""A reminder the defender cannot get cuts their grace short (core.fallback.miss_sooner), from
the dispatcher, which holds alerts then: it must never wait for a check-in another
transaction holds, whose writers lock it before its alert (PostgreSQL would abort one of the
two as a deadlock, the dispatcher's batch held back for its lease). Both backends."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from core import checkins, fallback
from core.claims import dialect
from core.db import transaction
from core.models import CheckIn, CheckInState
from core.sweep import Sweep
from tests.engine.conftest import T0, World

MIN = timedelta(minutes=1)


async def _row(world: World) -> CheckIn:
    async with world.sessions() as s:
        return (await s.execute(select(CheckIn))).scalar_one()


async def test_it_cuts_the_grace_short_but_never_waits_for_a_held_check_in(
    world: World, sweep: Sweep
) -> None:
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * MIN)
    await sweep.run(T0)
    row = await _row(world)
    assert row.state is CheckInState.reminded and row.next_action_at > T0 + MIN
    graced = row.next_action_at
    async with world.sessions() as holder:
        if dialect(holder) == "postgresql":  # SQLite's single writer: nothing to overlap
            await holder.execute(select(CheckIn).with_for_update())  # the defender, say
            async with transaction(world.sessions) as s:
                await asyncio.wait_for(fallback.miss_sooner(s, row.id, T0 + MIN), 5)
            await holder.rollback()
            assert (await _row(world)).next_action_at == graced  # left to its own grace
    async with transaction(world.sessions) as s:
        await fallback.miss_sooner(s, row.id, T0 + MIN)
    assert (await _row(world)).next_action_at == T0 + MIN
