"""A contact's /stop and their alert's close at the same moment: no all-clear reaches a contact
whose /stop committed first, nor waits for them once it has (both backends).

On PostgreSQL the close used to read the contact (still confirmed, or removed but owed the
all-clear) before the /stop committed, and queue the all-clear after /stop's withdrawal had
run. Each case forces one order. ``stop_first``: a blocker holds an alarm the close withdraws
(``withdrawals.withdraw_steps``), so the close has queued its all-clears and waits while the
/stop commits. ``resolve_first``: the close is done and not committed when the /stop starts;
the /stop waits for it (PostgreSQL: seen waiting on a lock), then withdraws what it queued.
The close locks the contacts only after its ``withdraw_steps``: with the contact's own alarm
waiting, both withdraw it, and they must never deadlock. On SQLite the single writer
serialises them: the outcome is checked there too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import alert_handling, alerts, contacts, defenders, outbox
from core.claims import dialect, write_lock
from core.crypto import Vault
from core.db import transaction
from core.messages import WITHDRAWN
from core.models import (
    Alert,
    AlertKind,
    ChannelAddress,
    Consent,
    OutboxMessage,
    OutboxState,
    TrustedContact,
)
from tests.engine.conftest import T0, World, build_world
from tests.engine.test_lock_order import deadlock, overlap, quick

__all__ = ["quick"]  # the fixture: PostgreSQL finds a deadlock in 50 ms, and waits 10 s at most

MIN = timedelta(minutes=1)


async def alarmed(world: World, how: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A panic that reached both contacts; contact 1's alarm waits for a retry. Contact 0 is
    then let go as ``how`` says. (the alert, contact 0's address, contact 1's alarm)."""
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        alert = await alerts.raise_alert(s, world.vault, defender=d, kind=AlertKind.panic, now=T0)
        await s.execute(update(OutboxMessage).values(state=OutboxState.delivered))
        c0 = await s.get(TrustedContact, world.contact_ids[0])
        assert c0 is not None and c0.address_id is not None
        address_id = c0.address_id
        stmt = select(OutboxMessage.id).where(
            OutboxMessage.alert_id == alert.id,
            OutboxMessage.idempotency_key.contains(world.contact_ids[1].hex),
        )
        alarm = (await s.execute(stmt)).scalar_one()
        waiting = {"state": OutboxState.pending, "attempts": 1, "delivered_at": None}
        await s.execute(update(OutboxMessage).where(OutboxMessage.id == alarm).values(waiting))
        if how == "removed":  # as contacts.remove_by_label leaves them
            c0.consent, c0.address_id = Consent.removed, None
        elif how == "deleted":
            await defenders.delete_data(s, defender=d)
    return alert.id, address_id, alarm


async def resolving(
    world: World, alert_id: uuid.UUID, done: asyncio.Event | None = None, go: Any = None
) -> None:
    async with transaction(world.sessions) as s:
        alert = await s.get(Alert, alert_id)
        assert alert is not None
        actor = f"responder:{world.responder_ids[0]}"
        await alert_handling.resolve(
            s, world.vault, alert=alert, outcome="safe", actor=actor, now=T0 + MIN
        )
        if done is not None:
            done.set()  # done, not committed until the test says
            await go.wait()


async def stopping(world: World, address_id: uuid.UUID) -> None:
    async with transaction(world.sessions) as s:
        address = await s.get(ChannelAddress, address_id)
        assert address is not None
        assert (await contacts.stop(s, address=address, now=T0 + MIN)).revoked == 1


async def waits(sessions: async_sessionmaker[AsyncSession], task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` comes to wait on a lock (PostgreSQL) before it ends; SQLite: a moment
    for it to start (its write waits for the writer's lock)."""
    async with sessions() as monitor:
        if dialect(monitor) != "postgresql":
            await asyncio.sleep(0.05)
            return True
        stmt = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        for _ in range(200):
            found = (await monitor.execute(stmt)).scalar_one()
            await monitor.rollback()
            if found or task.done():
                return bool(found)
            await asyncio.sleep(0.005)
    return False


async def settle(*tasks: asyncio.Task[Any]) -> None:
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
    failed = [e for e in done if isinstance(e, BaseException)]
    assert not [e for e in failed if deadlock(e)], f"deadlock: {failed}"
    if failed:
        raise failed[0]


async def stop_first(world: World, alert_id: uuid.UUID, address_id: uuid.UUID, alarm: Any) -> bool:
    work: list[Callable[[], Awaitable[Any]]] = [
        lambda: resolving(world, alert_id),
        lambda: stopping(world, address_id),
    ]
    async with transaction(world.sessions) as blocker:
        await write_lock(blocker)  # SQLite: the single writer's lock
        pg = dialect(blocker) == "postgresql"
        if pg:  # the close's withdraw_steps waits for it, its all-clears queued
            held = select(OutboxMessage.id).where(OutboxMessage.id == alarm)
            await blocker.execute(held.with_for_update())
        closing = asyncio.create_task(work[0]())
        await overlap(world.sessions, 1, [closing])
        stop = asyncio.create_task(work[1]())
        if pg:
            await stop  # committed while the close still waits
    await settle(closing, stop)
    return True


async def resolve_first(world: World, alert_id: uuid.UUID, address_id: uuid.UUID, _: Any) -> bool:
    done, go = asyncio.Event(), asyncio.Event()
    closing = asyncio.create_task(resolving(world, alert_id, done, go))
    await asyncio.wait_for(done.wait(), 10)
    stop = asyncio.create_task(stopping(world, address_id))
    waited = await waits(world.sessions, stop)
    go.set()
    await settle(closing, stop)
    return waited


@pytest.mark.parametrize("how", ["linked", "removed", "deleted"])
@pytest.mark.parametrize("order", [stop_first, resolve_first], ids=lambda f: f.__name__)
async def test_no_all_clear_goes_to_a_contact_who_stopped_as_it_closed(
    quick: async_sessionmaker[AsyncSession], vault: Vault, how: str, order: Any
) -> None:
    world = await build_world(quick, vault, webhook_url=None)
    alert_id, address_id, alarm = await alarmed(world, how)
    waited = await order(world, alert_id, address_id, alarm)
    async with quick() as s:
        alert = await s.get(Alert, alert_id)
        assert alert is not None and alert.outcome == "safe"
        stmt = select(OutboxMessage).where(
            OutboxMessage.alert_id == alert_id, OutboxMessage.idempotency_key.contains(":closed")
        )
        clears = (await s.execute(stmt)).scalars().all()
        c0, c1 = world.contact_ids[0].hex, world.contact_ids[1].hex
        to_c0 = [(r.state, r.last_error) for r in clears if c0 in r.idempotency_key]
        to_c1 = [r.state for r in clears if c1 in r.idempotency_key]
        stopped = await s.get(TrustedContact, world.contact_ids[0])
        assert stopped is not None and stopped.consent is Consent.revoked
    assert all(c == (OutboxState.failed, WITHDRAWN) for c in to_c0), to_c0
    assert to_c1 == [OutboxState.pending]  # alerted, never asked to stop: owed the all-clear
    assert waited, "the /stop did not wait for the close"


@pytest.mark.parametrize("first", ["resolve", "stop"])
async def test_a_close_and_a_stop_held_by_the_contacts_waiting_alarm_never_deadlock(
    quick: async_sessionmaker[AsyncSession], vault: Vault, first: str
) -> None:
    """Contact 0's own alarm waits for a retry: the close withdraws it (``withdraw_steps``),
    and so does the /stop, before it updates the contact. Released together, whichever takes
    the alarm first, they never deadlock (the close locks the contact only after its
    ``withdraw_steps``), and no all-clear is left to contact 0."""
    world = await build_world(quick, vault, webhook_url=None)
    alert_id, address_id, _ = await alarmed(world, "linked")
    async with transaction(world.sessions) as s:  # contact 0's alarm waits too
        mine = OutboxMessage.idempotency_key.contains(world.contact_ids[0].hex)
        stmt = select(OutboxMessage.id).where(OutboxMessage.alert_id == alert_id, mine)
        alarm = (await s.execute(stmt)).scalar_one()
        waiting = {"state": OutboxState.pending, "attempts": 1, "delivered_at": None}
        await s.execute(update(OutboxMessage).where(OutboxMessage.id == alarm).values(waiting))
    work = {
        "resolve": lambda: resolving(world, alert_id),
        "stop": lambda: stopping(world, address_id),
    }
    started: list[asyncio.Task[Any]] = []
    async with transaction(world.sessions) as blocker:
        await write_lock(blocker)  # SQLite: the single writer's lock
        if dialect(blocker) == "postgresql":
            held = select(OutboxMessage.id).where(OutboxMessage.id == alarm)
            await blocker.execute(held.with_for_update())
        for n, name in enumerate((first, "stop" if first == "resolve" else "resolve"), 1):
            started.append(asyncio.create_task(work[name]()))
            await overlap(world.sessions, n, started)
    await settle(*started)
    async with quick() as s:
        stmt = select(OutboxMessage).where(OutboxMessage.alert_id == alert_id, mine)
        rows = (await s.execute(stmt)).scalars().all()
    assert {(r.state, r.last_error) for r in rows} == {(OutboxState.failed, WITHDRAWN)}


async def withdrawing(world: World, address_id: uuid.UUID) -> None:
    """The first thing /stop does (``contacts.stop`` does it again at its end)."""
    async with transaction(world.sessions) as s:
        await write_lock(s)
        mine = (OutboxMessage.address_id == address_id, OutboxMessage.recipient == "contact")
        await outbox.withdraw_waiting(s, *mine)


async def test_a_message_claimed_as_the_stop_withdraws_it_is_marked(
    quick: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """A dispatcher claims contact 0's alarm (pending to sending) as the /stop withdraws what
    waits for them (``outbox.withdraw_waiting``, as every withdrawal does). It was two
    statements, the rows being sent, then those waiting: the second waited for the claim,
    then found the row sending and left it unmarked, and a failed send was tried again after
    the /stop. One statement waits for the claim, then marks the row it claimed (withdrawn
    if its send fails)."""
    world = await build_world(quick, vault, webhook_url=None)
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        alert = await alerts.raise_alert(s, world.vault, defender=d, kind=AlertKind.panic, now=T0)
        c0 = await s.get(TrustedContact, world.contact_ids[0])
        assert c0 is not None and c0.address_id is not None
        address_id = c0.address_id
        mine = OutboxMessage.idempotency_key.contains(world.contact_ids[0].hex)
        stmt = select(OutboxMessage.id).where(OutboxMessage.alert_id == alert.id, mine)
        alarm = (await s.execute(stmt)).scalar_one()
    async with transaction(world.sessions) as claim:  # the dispatcher's claim, not committed
        await write_lock(claim)  # SQLite: the single writer's lock
        lease = {"state": OutboxState.sending, "lease_owner": "d", "lease_until": T0 + MIN}
        await claim.execute(update(OutboxMessage).where(OutboxMessage.id == alarm).values(lease))
        stop = asyncio.create_task(withdrawing(world, address_id))
        await overlap(world.sessions, 1, [stop])
    await settle(stop)
    async with quick() as s:
        row = await s.get(OutboxMessage, alarm)
        assert row is not None
        assert (row.state, row.last_error) == (OutboxState.sending, WITHDRAWN)
