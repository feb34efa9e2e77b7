"""A reminder the sweep is writing while the defender deletes their data (really, or forced
with the duress PIN: ``defenders.hide``) never reaches their phone: the deletion waits for the
sweep's step, then withdraws it with the rest (both backends; PostgreSQL is where they overlap:
SQLite's single writer puts one before the other)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import checkins, defenders, timers
from core.crypto import Vault
from core.db import transaction
from core.models import CheckInState, Defender, OutboxMessage, OutboxState
from tests.engine.conftest import T0, build_world
from tests.engine.test_lock_order import quick

__all__ = ["quick"]  # the fixture: PostgreSQL gives up on a lock after 10 s, never hangs

MIN = timedelta(minutes=1)
DUE = T0 + 30 * MIN


@pytest.mark.parametrize("deletion", [defenders.delete_data, defenders.hide])
async def test_a_reminder_written_during_the_deletion_is_withdrawn(
    quick: async_sessionmaker[AsyncSession],
    vault: Vault,
    deletion: Callable[..., Awaitable[None]],
) -> None:
    world = await build_world(quick, vault, webhook_url=None)
    async with transaction(quick) as s:
        d = await world.defender(s)
        await checkins.arm_timer(s, defender=d, due_at=DUE, now=T0)

    async def delete() -> None:
        async with transaction(quick) as s:
            stmt = select(Defender).where(Defender.id == world.defender_id)
            await deletion(s, defender=(await s.execute(stmt)).scalar_one())

    async with quick() as sweeping, sweeping.begin():  # the sweep's batch, not committed yet
        taken = await timers.take(sweeping, vault, state=CheckInState.armed, now=DUE, limit=8)
        assert len(taken) == 1  # the reminder, to the defender's chat
        deleting = asyncio.create_task(delete())
        await asyncio.wait({deleting}, timeout=0.5)  # fixed: it waits for this commit
    await deleting

    async with quick() as s:
        stmt = select(OutboxMessage.state, OutboxMessage.last_error).where(
            OutboxMessage.recipient == "defender"
        )
        found = (await s.execute(stmt)).all()
    assert found == [(OutboxState.failed, "withdrawn")]
