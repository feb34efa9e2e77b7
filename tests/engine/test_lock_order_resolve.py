"""The dispatcher recording a desk notice's permanent failure and a responder resolving its
alert at the same moment wait for each other; on PostgreSQL they must never deadlock (40P01
aborts one: a delivery's outcome or the desk's "resolve" lost).

The lock orders: ``core.delivery.record`` locks its batch's outbox rows (``FOR UPDATE``,
those still ``sending`` under its lease), then each failed alarm's alert (``overtaken``,
``FOR UPDATE``, and ``fallback.desk_sooner`` again for a contact's).
``core.alert_handling.resolve`` locks the alert (``FOR UPDATE``), then queues the all-clears
(inserts: new keys) and withdraws the alert's alarms waiting for a retry
(``withdrawals.withdraw_steps``: the rows ``pending`` with ``attempts > 0`` read ``FOR UPDATE``,
then updated). A row being recorded is ``sending`` in every snapshot ``resolve`` can read (the
claim committed that), so ``resolve`` never locks, updates nor waits for a row ``record``
holds: no cycle.

Each round forces the overlap: a blocker transaction holds the alert; one of them, then the
other, is seen waiting on a lock (``record`` holding its rows by then), and the blocker
commits. PostgreSQL hands the alert to the first waiter, so the rounds alternate which one
goes first: ``resolve`` first is the order that would deadlock were ``withdraw_steps`` to
wait for a row being sent. On SQLite the single writer serialises them; the outcome is
checked there too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import alert_handling, alerts
from core.claims import dialect, write_lock
from core.crypto import Vault
from core.db import transaction
from core.delivery import Attempt, record
from core.messages import DeliveryError
from core.models import Alert, AlertKind, AlertState, ChannelAddress, OutboxMessage, OutboxState
from tests.engine.conftest import T0, World, build_world, timeline
from tests.engine.standin import StandIn
from tests.engine.test_dispatch import dispatcher
from tests.engine.test_lock_order import deadlock, overlap, quick

__all__ = ["quick"]  # the fixture: PostgreSQL finds a deadlock in 50 ms, and waits 10 s at most

ROUNDS = {"postgresql": 10, "sqlite": 4}  # alternating which one waits first
HANDLE = "quiet-heron-41"
R0, R1 = f"r0-{HANDLE}", f"r1-{HANDLE}"  # on duty (blocked the bot); off duty (the stand-in)
BLOCKED = DeliveryError("Forbidden: bot was blocked by the user", permanent=True)
SEC, HOUR = timedelta(seconds=1), timedelta(hours=1)


async def panic(world: World, now: datetime) -> uuid.UUID:
    async with transaction(world.sessions) as s:
        await s.execute(update(ChannelAddress).values(blocked_at=None))  # r0 on the desk again
        alert = await alerts.raise_alert(
            s, world.vault, defender=await world.defender(s), kind=AlertKind.panic, now=now
        )
        return alert.id


async def recording(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    attempts: list[Attempt],
    now: datetime,
) -> None:
    """What the dispatcher's pass does after its sends (``Dispatcher._deliver``, which logs a
    failure instead of raising it)."""
    async with transaction(sessions) as s:
        await record(s, vault, attempts, owner="test", now=now, rng=lambda: 0.5)


async def resolving(world: World, alert_id: uuid.UUID, now: datetime) -> None:
    """What POST /api/v1/alerts/{id}/resolve does: the alert read, then
    ``alert_handling.resolve``."""
    async with transaction(world.sessions) as s:
        alert = await s.get(Alert, alert_id)
        assert alert is not None and alert.state is not AlertState.resolved
        actor = f"responder:{world.responder_ids[1]}"
        await alert_handling.resolve(
            s, world.vault, alert=alert, outcome="safe", actor=actor, now=now
        )


async def race(
    world: World, alert_id: uuid.UUID, work: list[Callable[[], Awaitable[Any]]]
) -> None:
    """Run ``work`` (each its own transaction) while a blocker holds the alert, starting each
    once the ones before it wait on a lock (PostgreSQL), release them, and require that all
    of them commit."""
    started: list[asyncio.Task[Any]] = []
    async with transaction(world.sessions) as blocker:
        await write_lock(blocker)  # SQLite: the single writer's lock
        if dialect(blocker) == "postgresql":
            held = select(Alert.id).where(Alert.id == alert_id)
            await blocker.execute(held.with_for_update())
        for n, w in enumerate(work, 1):
            started.append(asyncio.create_task(w()))
            await overlap(world.sessions, n, started)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 20)
    failed = [e for e in done if isinstance(e, BaseException)]
    assert not [e for e in failed if deadlock(e)], f"deadlock: {failed}"
    if failed:
        raise failed[0]


async def test_a_failed_desk_notice_and_its_alert_resolved_wait_for_each_other(
    quick: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    world = await build_world(quick, vault, channel="standin", handle=HANDLE, webhook_url=None)
    channel = StandIn("standin")
    d = dispatcher(world, {"standin": channel})
    async with quick() as s:
        backend = dialect(s)
    for n in range(ROUNDS[backend]):
        now, order = T0 + n * HOUR, (("resolve", "record"), ("record", "resolve"))[n % 2]
        first = order[0]
        channel.sent.clear()
        alert_id = await panic(world, now)
        channel.fail(R0, BLOCKED)  # the on-duty responder's desk notice: a 403, for good
        jobs = await d.claim(now)  # the panic's notices: the desk's and the contacts'
        attempts = await d.send_all(jobs, now)
        [failed] = [a for a in attempts if a.outcome != "delivered"]
        [r0_job] = [j for j in jobs if j.to is not None and j.to.value == R0]
        assert failed.row_id == r0_job.row_id and failed.outcome == "permanent"
        alarms = {a.message.text for a in attempts if a.message is not None}
        work: dict[str, Callable[[], Awaitable[Any]]] = {
            "record": lambda attempts=attempts, now=now: recording(quick, vault, attempts, now),
            "resolve": lambda alert_id=alert_id, now=now: resolving(world, alert_id, now + SEC),
        }
        await race(world, alert_id, [work[k] for k in order])

        async with quick() as s:
            alert = await s.get(Alert, alert_id)
            assert alert is not None and alert.state is AlertState.resolved
            row = await s.get(OutboxMessage, failed.row_id)
            assert row is not None
            assert (row.state, row.attempts, row.lease_owner) == (OutboxState.failed, 1, None)
            assert row.last_error is not None and row.last_error.startswith("Forbidden")
        kinds = [e.kind for e in await timeline(world, alert_id)]
        if backend == "postgresql":  # the first waiter gets the alert when the blocker ends
            # Resolved first: the notice being sent is overtaken (no stand-in paged after
            # the all-clear). Recorded first: the stand-in is paged, then told it is over.
            assert ("delivery_fallback" in kinds) is (first == "record"), (first, kinds)
        await d.drain(now + 2 * SEC)
        async with quick() as s:  # everything of the alert sent or given up
            left = select(OutboxMessage.state).where(OutboxMessage.alert_id == alert_id)
            states = set((await s.execute(left)).scalars())
            assert states <= {OutboxState.delivered, OutboxState.failed}, states
        for value in {v for v, _t in channel.sent}:  # nobody gets an alarm after the all-clear
            texts = channel.to(value)
            assert texts, value
            assert texts[-1] not in alarms, (value, texts)
            assert all(t in alarms for t in texts[:-1]), (value, texts)
        got_alarm = {v for v, t in channel.sent if t in alarms}
        want = {f"c0-{HANDLE}", f"c1-{HANDLE}"} | ({R1} if "delivery_fallback" in kinds else set())
        assert got_alarm == want, (got_alarm, want)
