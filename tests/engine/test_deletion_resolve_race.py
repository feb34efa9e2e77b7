"""A defender's "delete my data" and a responder closing their alert as safe at the same moment
wait for each other; on PostgreSQL they must never deadlock (40P01 aborts one: the deletion,
or the all-clear, lost).

The lock orders: the close locks the alert, its alarms waiting for a retry
(``withdrawals.withdraw_steps``), then the contacts it queued all-clears to, ``FOR SHARE`` by id
(``withdrawals.spare_stopped``; the defender's row only for a contact already forgotten, which only
a committed deletion leaves). The deletion locks the defender's row, their check-ins, their
messages waiting, then their contacts, by id too, before deleting them
(``defenders.delete_data``). It used to delete them at once: a DELETE locks rows in the order
it finds them, not by id, so the close holding the first contact by id and the deletion the
other, each waited for the other's (40P01: here the close was aborted).

The test forces that: the contact first by id is also the last one stored, and a blocker holds
it while the close, then the deletion, come to wait for it. On SQLite the single writer
serialises them: the outcome is checked there too.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import alert_handling, alerts, defenders
from core.claims import dialect, write_lock
from core.crypto import Vault
from core.db import transaction
from core.models import (
    Alert,
    AlertKind,
    AlertState,
    DefenderStatus,
    OutboxMessage,
    OutboxState,
    TrustedContact,
)
from tests.engine.conftest import T0, World, build_world
from tests.engine.test_lock_order import overlap, quick
from tests.engine.test_stop_race import MIN, settle

__all__ = ["quick"]  # the fixture: PostgreSQL finds a deadlock in 50 ms, and waits 10 s at most


async def stored_last(world: World, contact_id: uuid.UUID) -> None:
    """Store the contact again, after the others: a scan finds it last."""
    async with transaction(world.sessions) as s:
        row = await s.get_one(TrustedContact, contact_id)
        values = {c.key: getattr(row, c.key) for c in TrustedContact.__table__.columns}
        await s.delete(row)
        await s.flush()
        s.add(TrustedContact(**values))


async def alarmed(world: World) -> uuid.UUID:
    """A panic that reached both confirmed contacts (every notice delivered)."""
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        alert = await alerts.raise_alert(s, world.vault, defender=d, kind=AlertKind.panic, now=T0)
        await s.execute(update(OutboxMessage).values(state=OutboxState.delivered))
        return alert.id


async def resolving(world: World, alert_id: uuid.UUID) -> None:
    async with transaction(world.sessions) as s:
        alert = await s.get_one(Alert, alert_id)
        actor = f"responder:{world.responder_ids[0]}"
        assert await alert_handling.resolve(
            s, world.vault, alert=alert, outcome="safe", actor=actor, now=T0 + MIN
        )


async def deleting(world: World) -> None:
    async with transaction(world.sessions) as s:
        await defenders.delete_data(s, defender=await world.defender(s))


async def test_a_deletion_and_a_close_as_safe_never_deadlock(
    quick: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    world = await build_world(quick, vault, webhook_url=None)
    first = min(world.contact_ids)  # the close's first lock (PostgreSQL compares uuids so too)
    await stored_last(world, first)
    alert_id = await alarmed(world)

    started: list[asyncio.Task[None]] = []
    async with transaction(quick) as blocker:
        await write_lock(blocker)  # SQLite: the single writer's lock
        if dialect(blocker) == "postgresql":
            held = select(TrustedContact.id).where(TrustedContact.id == first)
            await blocker.execute(held.with_for_update())
        started.append(asyncio.create_task(resolving(world, alert_id)))
        await overlap(quick, 1, started)  # the close waits for the first contact
        started.append(asyncio.create_task(deleting(world)))
        await overlap(quick, 2, started)  # the deletion too, the other contact deleted
    await settle(*started)

    async with quick() as s:
        alert = await s.get_one(Alert, alert_id)
        assert (alert.state, alert.outcome) == (AlertState.resolved, "safe")
        assert (await world.defender(s)).status is DefenderStatus.deleted
        stmt = select(OutboxMessage.state).where(
            OutboxMessage.alert_id == alert_id,
            OutboxMessage.recipient == "contact",
            OutboxMessage.idempotency_key.contains(":closed"),
        )
        # Both contacts were alerted: each is owed the all-clear, forgotten or not.
        assert (await s.execute(stmt)).scalars().all() == [OutboxState.pending] * 2
