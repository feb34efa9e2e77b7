"""The sweep's hot path under a spike (both backends): batches committed one after another,
each transition with its outbox rows, every row encrypted under its own key."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import outbox, recipients, timers
from core.crypto import CryptoError, Vault
from core.db import transaction
from core.messages import Outbound
from core.models import (
    ChannelAddress,
    CheckIn,
    CheckInKind,
    CheckInState,
    Defender,
    DefenderStatus,
    OutboxMessage,
    utcnow,
)
from core.sweep import Sweep
from tests.engine.conftest import T0, address

SPIKE = 150


async def spike(sessions: async_sessionmaker[AsyncSession], vault: Vault, org: uuid.UUID) -> None:
    """SPIKE defenders (in three languages) whose timers all fall due at T0."""
    async with transaction(sessions) as s:
        people = [
            Defender(
                id=uuid.uuid4(),
                org_id=org,
                handle=f"h{n}",
                locale=("es", "fr", "en")[n % 3],
                status=DefenderStatus.active,
            )
            for n in range(SPIKE)
        ]
        s.add_all(people)
        await s.flush()
        s.add_all(
            address(vault, "telegram", f"d{n}", defender_id=d.id) for n, d in enumerate(people)
        )
        rows = [
            {
                "id": uuid.uuid4(),
                "defender_id": d.id,
                "kind": CheckInKind.timer,
                "due_at": T0,
                "next_action_at": T0,
                "grace_s": 900,
                "state": CheckInState.armed,
                "version": 1,
                "created_at": T0 - timedelta(hours=1),
            }
            for d in people
        ]
        await s.execute(insert(CheckIn), rows)


@pytest.fixture
async def org(sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID:
    from core.models import Organisation

    async with transaction(sessions) as s:
        row = Organisation(id=uuid.uuid4(), name="Desk")
        s.add(row)
    return row.id


async def reminded(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        stmt = select(func.count()).where(CheckIn.state == CheckInState.reminded)
        return int(await s.scalar(stmt) or 0)


async def test_a_spike_is_committed_in_growing_batches_each_with_its_messages(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    org: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await spike(sessions, vault, org)
    progress: list[int] = []  # reminders queued, seen at each batch's commit

    def clock() -> datetime:
        return T0

    def observe(_late: float) -> None:
        pass

    sweep = Sweep(sessions, vault, owner="s", observe=observe, clock=clock)
    take = timers.take

    async def counting(s: AsyncSession, *args: object, **kwargs: object) -> list[datetime]:
        done = await take(s, *args, **kwargs)  # type: ignore[arg-type]
        before = await s.scalar(select(func.count()).select_from(OutboxMessage))
        progress.append(int(before or 0))
        return done

    monkeypatch.setattr(timers, "take", counting)
    assert await sweep.run(T0) == SPIKE
    assert progress == [64, 150]  # 64 first (milliseconds), then up to twice as many
    assert await reminded(sessions) == SPIKE and sweep.steps == SPIKE

    async with sessions() as s:
        rows = list((await s.execute(select(OutboxMessage))).scalars())
    assert len(rows) == SPIKE and len({r.idempotency_key for r in rows}) == SPIKE
    assert len({r.dek for r in rows}) == SPIKE  # a data key of its own for every row
    texts = {outbox.payload(vault, r).text for r in rows}
    assert len(texts) == 3  # one rendering per language, each row encrypted apart
    assert all(r.id.version == 7 and r.created_at == T0 for r in rows)


async def test_a_failed_batch_leaves_nothing_half_done_and_is_redone_with_the_same_keys(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    org: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await spike(sessions, vault, org)
    sweep = Sweep(sessions, vault, owner="s", batch=64)
    insert_rows = outbox.insert_rows
    lost: set[str] = set()

    async def crash_on_the_second(s: AsyncSession, ready: list[dict[str, object]]) -> None:
        await insert_rows(s, ready)
        if lost or (await s.scalar(select(func.count()).select_from(OutboxMessage)) or 0) > 64:
            lost.update(str(r["idempotency_key"]) for r in ready)  # written, transitions not:
            raise RuntimeError("killed")  # a crash here …

    monkeypatch.setattr("core.timers.insert_rows", crash_on_the_second)
    with pytest.raises(RuntimeError):
        await sweep.run(T0)
    monkeypatch.undo()
    async with sessions() as s:
        queued = await s.scalar(select(func.count()).select_from(OutboxMessage))
        first = set((await s.execute(select(OutboxMessage.idempotency_key))).scalars())
    assert queued == 64 and await reminded(sessions) == 64  # … rolls the whole batch back

    assert await sweep.run(T0 + timedelta(seconds=1)) == SPIKE - 64
    async with sessions() as s:
        keys = list((await s.execute(select(OutboxMessage.idempotency_key))).scalars())
    assert len(keys) == len(set(keys)) == SPIKE and first.isdisjoint(lost)
    assert lost <= set(keys)  # the batch that failed was redone with the very same keys
    assert len(lost) == 64 and await reminded(sessions) == SPIKE


async def test_two_sweeps_racing_over_one_spike_take_each_step_once(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, org: uuid.UUID
) -> None:
    await spike(sessions, vault, org)
    a = Sweep(sessions, vault, owner="a", batch=32)
    b = Sweep(sessions, vault, owner="b", batch=32)
    done = await asyncio.gather(a.run(T0), b.run(T0))
    assert sum(done) == SPIKE and a.steps + b.steps == SPIKE
    async with sessions() as s:
        keys = list((await s.execute(select(OutboxMessage.idempotency_key))).scalars())
        versions = set((await s.execute(select(CheckIn.version))).scalars())
    assert len(keys) == len(set(keys)) == SPIKE
    assert versions == {2}  # one transition each
    assert await reminded(sessions) == SPIKE


async def test_a_deleted_defenders_timer_is_cancelled_without_a_message(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, org: uuid.UUID
) -> None:
    await spike(sessions, vault, org)
    async with transaction(sessions) as s:
        gone = (await s.execute(select(Defender).limit(1))).scalar_one()
        gone.status = DefenderStatus.deleted
    assert await Sweep(sessions, vault, owner="s").run(T0) == SPIKE
    async with sessions() as s:
        found = await s.execute(select(CheckIn.defender_id, CheckIn.state))
        states = dict(found.all())
        queued = await s.scalar(select(func.count()).select_from(OutboxMessage))
    assert states[gone.id] is CheckInState.cancelled and queued == SPIKE - 1


async def test_each_reminder_goes_to_the_defenders_best_address(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, org: uuid.UUID
) -> None:
    """The claim joins each defender's best address: as ``recipients.defender_addresses``
    picks it (not blocked first, then by preference), none for a defender without one."""
    await spike(sessions, vault, org)
    async with transaction(sessions) as s:
        first, second, bare = (await s.execute(select(Defender).limit(3))).scalars()
        await s.execute(delete(ChannelAddress).where(ChannelAddress.defender_id == bare.id))
        old = (await recipients.defender_addresses(s, [first.id, second.id])).copy()
        # first: its address is blocked, a new one is not; second: a more preferred one.
        (await s.get_one(ChannelAddress, old[first.id][0])).blocked_at = T0
        s.add(address(vault, "signal", "+100", defender_id=first.id, preference=5))
        s.add(address(vault, "signal", "+200", defender_id=second.id, preference=-1))
        await s.flush()
        best = await recipients.defender_addresses(s, [first.id, second.id])
    assert best[first.id][0] != old[first.id][0] and best[second.id][0] != old[second.id][0]
    assert await Sweep(sessions, vault, owner="s").run(T0) == SPIKE
    async with sessions() as s:
        owners = dict((await s.execute(select(CheckIn.id, CheckIn.defender_id))).all())
        queued = await s.execute(select(OutboxMessage.idempotency_key, OutboxMessage.address_id))
    # A check-in's key starts "c:<its id>:" (core.timers.prepare).
    sent = {owners[uuid.UUID(key.split(":")[1])]: to for key, to in queued.all()}
    assert sent[first.id] == best[first.id][0] and sent[second.id] == best[second.id][0]
    assert bare.id not in sent and len(sent) == SPIKE - 1
    assert await reminded(sessions) == SPIKE  # the bare one's step is taken all the same


async def test_enqueued_rows_read_back_like_orm_rows(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, org: uuid.UUID
) -> None:
    async with transaction(sessions) as s:
        where = address(vault, "telegram", "x")
        s.add(where)
        await s.flush()
        now = utcnow()
        items = [
            outbox.Item("telegram", 1, f"k{n}", Outbound(f"hola {n}"), address_id=where.id)
            for n in range(3)
        ] + [outbox.Item("webhook", 0, "w", raw=b'{"a": 1}')]
        await outbox.enqueue_many(s, vault, items, now=now)
        await outbox.enqueue_many(s, vault, items[:1], now=now)  # a key queued twice: skipped
    async with sessions() as s:
        rows = {r.idempotency_key: r for r in (await s.execute(select(OutboxMessage))).scalars()}
    assert sorted(rows) == ["k0", "k1", "k2", "w"]
    assert outbox.payload(vault, rows["k2"]).text == "hola 2"
    assert rows["w"].get(vault, "payload_enc") == b'{"a": 1}'
    assert rows["k0"].address_id == where.id and rows["k0"].next_attempt_at == now
    rows["k1"].shred("payload_enc")
    assert rows["k1"].get(vault, "payload_enc") is None
    assert outbox.payload(vault, rows["k0"]).text == "hola 0"  # the others are untouched


def test_a_batch_key_opens_its_own_row_only(vault: Vault) -> None:
    """seal_many: a data key per row, bound to the row's id; a sibling's key (or the same
    ciphertext moved to another row) opens nothing, so shredding one row's key is final."""
    ids = [uuid.uuid4() for _ in range(3)]
    sealed = vault.seal_many("outbox", "payload_enc", [(i, b"same text") for i in ids])
    deks = [vault.unwrap_dek(w, "outbox", i) for i, (w, _c) in zip(ids, sealed, strict=True)]
    assert len(set(deks)) == 3 and len({c for _w, c in sealed}) == 3
    for i, dek, (_w, blob) in zip(ids, deks, sealed, strict=True):
        assert vault.decrypt(dek, "outbox", "payload_enc", i, blob) == b"same text"
    with pytest.raises(CryptoError):  # row 0's ciphertext under row 1's key
        vault.decrypt(deks[1], "outbox", "payload_enc", ids[0], sealed[0][1])
    with pytest.raises(CryptoError):  # row 0's ciphertext and key moved to row 1
        vault.decrypt(deks[0], "outbox", "payload_enc", ids[1], sealed[0][1])
    with pytest.raises(CryptoError):
        vault.unwrap_dek(sealed[0][0], "outbox", ids[1])
