"""A message withdrawn while it is being sent (``outbox.withdraw_waiting`` marks it) never goes
afterwards: not when its dispatcher dies and its lease expires, not when its dispatcher stops
and hands back what it holds, not as a retry of a send that failed. It ends withdrawn, its text
shredded, as a waiting one is ("are you safe?" after the defender ended the check-in, or after
"delete my data", reaching the phone).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import outbox
from core.crypto import Vault
from core.db import transaction
from core.dispatch import Dispatcher
from core.messages import DeliveryError, Outbound
from core.models import OutboxMessage, OutboxState, Priority
from core.outbox import Item, enqueue_many
from tests.engine.conftest import address
from tests.engine.standin import StandIn
from tests.engine.test_dispatch_stop import Held

PHONE = "d-phone"
LEASE = timedelta(seconds=60)


async def reminder(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, channel: str, now: datetime
) -> uuid.UUID:
    """An "are you safe?" queued to the defender's phone."""
    async with transaction(sessions) as s:
        to = address(vault, channel, PHONE)
        s.add(to)
        await s.flush()
        text = Outbound(text="Are you safe?")
        item = Item(
            channel, int(Priority.P1), "c:1:remind", text, address_id=to.id, recipient="defender"
        )
        await enqueue_many(s, vault, [item], now=now)
        await s.flush()
        return to.id


async def withdraw(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The defender ends the check-in (or deletes their data): the reminder is withdrawn."""
    async with transaction(sessions) as s:
        await outbox.withdraw_waiting(s, OutboxMessage.recipient == "defender")


async def the_row(sessions: async_sessionmaker[AsyncSession]) -> OutboxMessage:
    async with sessions() as s:
        rows = (await s.execute(select(OutboxMessage))).scalars().all()
    [row] = rows
    return row


def assert_withdrawn(row: OutboxMessage) -> None:
    assert (row.state, row.last_error) == (OutboxState.failed, "withdrawn")
    assert row.payload_enc is None and row.dek is None  # shredded
    assert row.lease_owner is None and row.lease_until is None


async def test_it_withdraws_a_marked_row_whose_lease_expired(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """The dispatcher sending the reminder dies; the reminder is withdrawn meanwhile. When its
    lease expires, another dispatcher withdraws it instead of sending it again."""
    t0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    await reminder(sessions, vault, "standin", t0)
    channel = StandIn("standin")
    dead = Dispatcher(sessions, vault, {"standin": channel}, owner="w1", limits={})
    assert len(await dead.claim(t0)) == 1  # and never records: its process is killed
    await withdraw(sessions)
    marked = await the_row(sessions)
    assert (marked.state, marked.last_error) == (OutboxState.sending, "withdrawn")

    other = Dispatcher(sessions, vault, {"standin": channel}, owner="w2", limits={})
    await other.drain(t0 + LEASE + timedelta(seconds=1))
    await other.drain(t0 + 2 * LEASE)

    assert channel.calls == []  # never sent
    assert_withdrawn(await the_row(sessions))


async def test_it_withdraws_a_marked_row_a_stopping_dispatcher_hands_back(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """The reminder is withdrawn while its send hangs; the dispatcher stops (a deploy) and
    hands back what it holds: the reminder is withdrawn, not put back in the queue."""
    channel = Held(None)
    await reminder(sessions, vault, "held", datetime.now(UTC))
    d = Dispatcher(sessions, vault, {"held": channel}, owner="w1", limits={}, stop_grace_s=0.2)
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(channel.started.wait(), 10)
    await withdraw(sessions)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert_withdrawn(await the_row(sessions))

    after = StandIn("held")
    restarted = Dispatcher(sessions, vault, {"held": after}, owner="w2", limits={})
    assert await restarted.drain(datetime.now(UTC) + timedelta(hours=1)) == 0
    assert after.calls == []


async def test_it_withdraws_a_marked_row_whose_send_failed_for_now(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """The reminder is withdrawn while its send is under way; the send fails with an error
    worth retrying: the reminder is withdrawn, never tried again."""
    t0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    await reminder(sessions, vault, "standin", t0)
    channel = StandIn("standin")
    channel.fail(PHONE, DeliveryError("Timed out", permanent=False))
    d = Dispatcher(sessions, vault, {"standin": channel}, owner="w1", limits={})
    jobs = await d.claim(t0)
    await withdraw(sessions)
    await d._deliver(jobs, t0)

    assert_withdrawn(await the_row(sessions))
    await d.drain(t0 + timedelta(hours=1))
    assert len(channel.calls) == 1 and channel.sent == []
