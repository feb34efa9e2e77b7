"""An alarm waiting for a retry when its alert closes is withdrawn (``withdrawals.withdraw_steps``)
or sent, never both: a row that says "withdrawn" was not sent, one that was sent says so.

A dispatcher may claim the row at that moment. On PostgreSQL the claim takes what nobody holds
(``FOR UPDATE SKIP LOCKED``) and commits on its own, whatever the closing transaction does:
``withdraw_steps`` locks the rows it withdraws, so a claim after its read skips them, and a
claim holding them makes it wait and then find them ``sending``, left to the dispatcher
(``core.delivery.overtaken`` if the send fails). On SQLite the closing transaction holds the
single writer's lock from its start (``alerts.lock``), so a claim waits for its commit or goes
before it: the same outcomes, checked there too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import dispatch, withdrawals
from core.claims import dialect
from core.crypto import Vault
from core.db import transaction
from core.dispatch import Dispatcher, Job
from core.messages import DeliveryError
from core.models import Alert, OutboxMessage, OutboxState
from tests.engine.conftest import T0, World, build_world
from tests.engine.standin import StandIn
from tests.engine.test_dispatch import dispatcher
from tests.engine.test_lock_order import overlap, quick
from tests.engine.test_lock_order_resolve import HANDLE, panic, resolving

__all__ = ["quick"]  # the fixture: PostgreSQL gives up on a lock after 10 s, never hangs

C0 = f"c0-{HANDLE}"
SLOW = DeliveryError("Timed out", permanent=False)
SEC, MIN = timedelta(seconds=1), timedelta(minutes=1)


async def waiting_alarm(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> tuple[World, Dispatcher, StandIn, uuid.UUID, uuid.UUID]:
    """A panic whose alarm to contact 0 failed once and waits for its retry, due at T0 + MIN;
    everything else of it delivered."""
    world = await build_world(sessions, vault, channel="standin", handle=HANDLE, webhook_url=None)
    channel = StandIn("standin")
    d = dispatcher(world, {"standin": channel})
    alert_id = await panic(world, T0)
    channel.fail(C0, SLOW)
    await d.drain(T0)
    async with sessions() as s:
        stmt = select(OutboxMessage).where(
            OutboxMessage.alert_id == alert_id, OutboxMessage.state == OutboxState.pending
        )
        [row] = (await s.execute(stmt)).scalars()
    assert (row.recipient, row.attempts) == ("contact", 1)
    assert row.next_attempt_at <= T0 + MIN
    return world, d, channel, alert_id, row.id


async def outcome(world: World, row_id: uuid.UUID) -> tuple[OutboxState, str | None]:
    async with world.sessions() as s:
        row = await s.get(OutboxMessage, row_id)
        assert row is not None
        return row.state, row.last_error


async def test_an_alarm_claimed_after_the_closing_read_it_is_not_sent(
    quick: async_sessionmaker[AsyncSession], vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dispatcher claims (and sends, and records) between ``withdraw_steps``'s read of the
    waiting alarm and the closing transaction's commit: it must not get the row."""
    world, d, channel, alert_id, row_id = await waiting_alarm(quick, vault)
    [alarm] = [t for v, t in channel.calls if v == C0]
    async with quick() as s:
        postgresql = dialect(s) == "postgresql"
    now = T0 + MIN
    withdraw_steps = withdrawals.withdraw_steps
    claims: list[asyncio.Task[list[Job]]] = []

    async def then_claim(session: AsyncSession, alert: Alert) -> None:
        await withdraw_steps(session, alert)
        claims.append(asyncio.create_task(d.claim(now)))
        # PostgreSQL: SKIP LOCKED never waits. SQLite: it waits for the writer's lock, which
        # this transaction holds until it commits.
        done, _ = await asyncio.wait(claims, timeout=10 if postgresql else 0.3)
        assert bool(done) is postgresql
        if done:  # sent and recorded while the alert is still closing
            await d._deliver(claims[0].result(), now)

    monkeypatch.setattr(withdrawals, "withdraw_steps", then_claim)
    await resolving(world, alert_id, now)
    monkeypatch.undo()
    if not postgresql:
        await d._deliver(await claims[0], now)  # the all-clears, queued by then
    await d.drain(now + 2 * SEC)

    assert await outcome(world, row_id) == (OutboxState.failed, "withdrawn")
    assert alarm not in channel.to(C0)  # withdrawn, so never sent
    assert len(channel.to(C0)) == 1  # the all-clear


async def test_an_alarm_being_claimed_when_its_alert_closes_is_left_to_the_dispatcher(
    quick: async_sessionmaker[AsyncSession], vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dispatcher's claim of the waiting alarm has not committed yet when the alert closes:
    the closing transaction waits for it, finds the row being sent and leaves it alone; sent,
    it is recorded as delivered, before the all-clear."""
    world, d, channel, alert_id, row_id = await waiting_alarm(quick, vault)
    [alarm] = [t for v, t in channel.calls if v == C0]
    now = T0 + MIN
    claimed, go = asyncio.Event(), asyncio.Event()

    @asynccontextmanager
    async def held(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
        async with transaction(factory) as s:
            yield s
            claimed.set()  # the claim's rows updated (and locked), not committed
            await go.wait()

    monkeypatch.setattr(dispatch, "transaction", held)
    claim = asyncio.create_task(d.claim(now))
    await asyncio.wait_for(claimed.wait(), 10)
    monkeypatch.undo()
    closing = asyncio.create_task(resolving(world, alert_id, now))
    await overlap(quick, 1, [claim, closing])  # PostgreSQL: the closing waits on a lock
    go.set()
    jobs = await asyncio.wait_for(claim, 10)
    await asyncio.wait_for(closing, 10)
    assert [j.row_id for j in jobs] == [row_id]

    await d._deliver(jobs, now)
    assert await outcome(world, row_id) == (OutboxState.delivered, None)
    await d.drain(now + 2 * SEC)
    sent, all_clear = channel.to(C0)  # the alarm, then the all-clear
    assert (sent, all_clear != alarm) == (alarm, True)
