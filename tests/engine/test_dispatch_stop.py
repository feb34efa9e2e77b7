"""The dispatcher stopping (a deploy's SIGTERM) and timing its retries from the answer."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import Vault
from core.db import transaction
from core.dispatch import Dispatcher
from core.messages import Address, Delivered, DeliveryError, Outbound
from core.models import OutboxMessage, OutboxState, Priority
from core.outbox import Item, enqueue_many
from tests.engine.conftest import address
from tests.engine.standin import StandIn


class Held(StandIn):
    """A channel whose sends take ``seconds`` (forever if None), then go through."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__("held")
        self.seconds, self.started = seconds, asyncio.Event()

    async def send(self, to: Address, message: Outbound) -> Delivered:
        self.started.set()
        await (asyncio.Event().wait() if self.seconds is None else asyncio.sleep(self.seconds))
        return await super().send(to, message)


async def queue_one(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> uuid.UUID:
    async with transaction(sessions) as s:
        to = address(vault, "held", "r-duty")
        s.add(to)
        await s.flush()
        item = Item("held", int(Priority.P0), "panic:1", Outbound(text="PANIC"), address_id=to.id)
        await enqueue_many(s, vault, [item], now=datetime.now(UTC))
    async with sessions() as s:
        return (await s.execute(select(OutboxMessage.id))).scalar_one()


async def stopped_during_send(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, channel: Held, grace_s: float
) -> OutboxMessage:
    row_id = await queue_one(sessions, vault)
    d = Dispatcher(sessions, vault, {"held": channel}, owner="w1", limits={}, stop_grace_s=grace_s)
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(channel.started.wait(), 10)
    task.cancel()  # SIGTERM while the panic notice is on its way
    with contextlib.suppress(asyncio.CancelledError):
        await task
    async with sessions() as s:
        return await s.get_one(OutboxMessage, row_id)


async def test_a_stopping_worker_hands_back_what_it_could_not_send(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """A send still hanging when the grace ends: the row is pending again at once, so the
    restarted (or another) worker sends the panic notice now, not after the 60 s lease."""
    row = await stopped_during_send(sessions, vault, Held(None), grace_s=0.2)
    assert row.state == OutboxState.pending
    assert row.lease_owner is None and row.lease_until is None
    assert row.payload_enc is not None  # still there to be sent


async def test_a_stopping_worker_lets_a_send_under_way_finish(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """A send that answers within the grace is recorded: delivered once, not sent again."""
    channel = Held(0.3)
    row = await stopped_during_send(sessions, vault, channel, grace_s=5.0)
    assert row.state == OutboxState.delivered and channel.to("r-duty") == ["PANIC"]


async def test_retry_after_counts_from_the_answer_not_the_claim(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """The channel took 0.5 s to answer 429 "retry after 1": the next try is at least 1 s
    after that answer (counting from the claim would retry 0.5 s too soon: another 429)."""

    class SlowLimited(StandIn):
        async def send(self, to: Address, message: Outbound) -> Delivered:
            await asyncio.sleep(0.5)
            raise DeliveryError("rate limited", retry_after=1)

    row_id = await queue_one(sessions, vault)
    d = Dispatcher(sessions, vault, {"held": SlowLimited("held")}, owner="w", limits={})
    claimed = datetime.now(UTC)
    began = time.monotonic()
    assert await d.dispatch_once(claimed) == 1
    answered = claimed + timedelta(seconds=time.monotonic() - began)
    async with sessions() as s:
        row = await s.get_one(OutboxMessage, row_id)
    assert row.state == OutboxState.pending and row.attempts == 1
    assert row.next_attempt_at.replace(tzinfo=UTC) >= claimed + timedelta(seconds=1.45)
    assert row.next_attempt_at.replace(tzinfo=UTC) <= answered + timedelta(seconds=1.2)


async def test_a_stop_landing_as_the_dispatcher_is_woken_still_stops_it(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM in the very loop turn where a finished pass (or a commit) wakes the idle
    dispatcher: the stop must not be lost. Python 3.11's ``asyncio.wait_for`` returned the
    wake-up instead of raising the cancellation, and the dispatcher went on claiming every
    ``idle_s`` for ever: a worker that never stopped (a hang, not a slow stop)."""
    d = Dispatcher(sessions, vault, {"held": Held(None)}, owner="w1", limits={}, idle_s=60.0)
    task = asyncio.create_task(d.run())
    async with asyncio.timeout(10):
        while not d._wake._waiters:  # type: ignore[attr-defined]  # idle: waiting to be woken
            await asyncio.sleep(0.01)
    d.wake()
    await asyncio.sleep(0)  # the wake-up's waiter is done; the dispatcher has not resumed yet
    task.cancel()
    try:
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, "the dispatcher ignored its stop"
        assert task.cancelled()
    finally:
        task.cancel()  # without the fix: stop it for good (it is idle again now)
        with contextlib.suppress(asyncio.CancelledError):
            await task
