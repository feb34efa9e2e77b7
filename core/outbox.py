"""The outbox: every outbound message is a row written in the caller's transaction.

Delivery (``core.dispatch``) happens after commit, never inside a transaction; the commit
wakes the dispatcher of this process (``core.wakeup``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, case, null, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from core import bulk, wakeup
from core.crypto import Vault
from core.messages import WITHDRAWN, Outbound
from core.models import ChannelAddress, OutboxMessage, OutboxState, Priority

TABLE = OutboxMessage.__tablename__
_TABLE: Table = OutboxMessage.__table__  # type: ignore[assignment]


async def enqueue(
    session: AsyncSession,
    vault: Vault,
    *,
    to: ChannelAddress,
    message: Outbound,
    priority: Priority,
    key: str,
    now: datetime,
    alert_id: uuid.UUID | None = None,
    recipient: str | None = None,
) -> OutboxMessage | None:
    """Queue ``message`` for ``to``; ``key`` makes it idempotent (None if already queued)."""
    existing = await session.execute(
        select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key)
    )
    if existing.first() is not None:
        return None
    row = OutboxMessage(
        id=uuid.uuid4(),
        priority=int(priority),
        channel=to.channel,
        address_id=to.id,
        alert_id=alert_id,
        recipient=recipient,
        idempotency_key=key,
        next_attempt_at=now,
    )
    store(vault, row, message)
    session.add(row)
    wakeup.touch(session, wakeup.OUTBOX)
    return row


@dataclass(frozen=True)
class Item:
    """One row for ``enqueue_many``: a channel message, or a webhook body (``raw``)."""

    channel: str
    priority: int
    key: str
    message: Outbound | None = None
    raw: bytes | None = None
    address_id: uuid.UUID | None = None
    webhook_id: uuid.UUID | None = None
    alert_id: uuid.UUID | None = None
    recipient: str | None = None


_COLUMNS = (
    "id",
    "created_at",
    "dek",
    "payload_enc",
    "priority",
    "channel",
    "address_id",
    "webhook_id",
    "alert_id",
    "recipient",
    "idempotency_key",
    "state",
    "attempts",
    "next_attempt_at",
)
_SHARED = frozenset({"created_at", "next_attempt_at", "state"})  # one value for a whole batch
_RAW = frozenset({"dek", "payload_enc"})  # bytes: both drivers take them as they are


def new_ids(n: int) -> list[uuid.UUID]:
    """``n`` time-ordered UUIDs (the version 7 layout: 48 bits of Unix milliseconds, then 74
    random bits from one read of the system's randomness). New rows land at the end of the
    primary key's index instead of at random pages: a spike's inserts touch far fewer pages.
    They tell when the row was made, which ``created_at`` says anyway."""
    head = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76
    noise = os.urandom(10 * n)
    ids = []
    for i in range(0, 10 * n, 10):
        rand = int.from_bytes(noise[i : i + 10])
        ids.append(uuid.UUID(int=head | (rand >> 68) << 64 | 0b10 << 62 | rand & _LOW62))
    return ids


_LOW62 = (1 << 62) - 1


def rows(
    vault: Vault, items: list[Item], *, now: datetime, at: datetime | None = None
) -> list[dict[str, Any]]:
    """Encrypted rows ready to insert: the costly part, done outside any transaction;
    ``at``: when they are first due (``now`` unless given: see ``flows.store.reply``).

    The same encryption as ``Encrypted.put``, without ORM objects (the sweep's hot path): each
    row has its own data key, so shredding one row never touches another. A message shared by
    many rows (a reminder in one language) is serialised once; each row is encrypted apart."""
    rendered: dict[int, bytes] = {}
    plain: list[bytes] = []
    for item in items:
        if item.raw is not None:
            plain.append(item.raw)
            continue
        assert item.message is not None
        raw = rendered.get(id(item.message))
        if raw is None:
            raw = json.dumps(item.message.to_json(), ensure_ascii=False).encode()
            rendered[id(item.message)] = raw
        plain.append(raw)
    ids = new_ids(len(items))
    sealed = vault.seal_many(TABLE, "payload_enc", list(zip(ids, plain, strict=True)))
    pending = OutboxState.pending
    return [
        {
            "id": row_id,
            "created_at": now,
            "dek": dek,
            "payload_enc": blob,
            "priority": item.priority,
            "channel": item.channel,
            "address_id": item.address_id,
            "webhook_id": item.webhook_id,
            "alert_id": item.alert_id,
            "recipient": item.recipient,
            "idempotency_key": item.key,
            "state": pending,
            "attempts": 0,
            "next_attempt_at": now if at is None else at,
        }
        for row_id, item, (dek, blob) in zip(ids, items, sealed, strict=True)
    ]


_INSERT = bulk.BulkInsert(
    _TABLE, _COLUMNS, shared=_SHARED, raw=_RAW, skip_conflicts_on="idempotency_key"
)


def bound(dialect: Dialect, ready: list[dict[str, Any]]) -> bulk.Bound:
    """Rows from ``rows`` bound for the driver (no database needed: a worker thread may),
    in key order: the unique index on the keys is then filled page by page, not at random."""
    return _INSERT.bind(dialect, sorted(ready, key=lambda r: str(r["idempotency_key"])))


async def insert_bound(session: AsyncSession, ready: bulk.Bound) -> None:
    """Queue rows from ``bound`` in one statement; keys already queued are skipped."""
    if ready[1]:
        await bulk.run(session, ready)
        wakeup.touch(session, wakeup.OUTBOX)


async def insert_rows(session: AsyncSession, ready: list[dict[str, Any]]) -> None:
    """Queue rows from ``rows`` in one statement; keys already queued are skipped."""
    if ready:
        conn = await session.connection()
        await insert_bound(session, bound(conn.dialect, ready))


async def enqueue_many(
    session: AsyncSession,
    vault: Vault,
    items: list[Item],
    *,
    now: datetime,
    at: datetime | None = None,
) -> None:
    """Queue many messages in one statement; keys already queued are skipped, not an error."""
    await insert_rows(session, rows(vault, items, now=now, at=at))


def store(vault: Vault, row: OutboxMessage, message: Outbound) -> None:
    """Write (or rewrite) ``row``'s payload: ``message``, encrypted with the row's key."""
    row.put(vault, "payload_enc", json.dumps(message.to_json(), ensure_ascii=False))


def payload(vault: Vault, row: OutboxMessage) -> Outbound:
    raw = row.get(vault, "payload_enc")
    if raw is None:
        raise ValueError(f"outbox row {row.id} has no payload (already delivered and shredded)")
    return Outbound.from_json(json.loads(raw))


async def withdraw_waiting(session: AsyncSession, *where: ColumnElement[bool]) -> None:
    """The messages ``where`` selects that have not gone yet never go: those waiting are
    withdrawn, their text shredded; one being sent now is marked, and withdrawn if its send
    fails (``core.delivery.record``) or its dispatcher lets go of it (``handed_back``): never
    retried nor sent elsewhere (no fallback)."""
    # One statement for both (PostgreSQL): a row a dispatcher holds, claiming it (pending to
    # sending) or recording its send (sending back to pending), is waited for, then taken as
    # that commit left it. Two statements (the sending rows, then the pending ones) let a
    # claim through: the second waited for it, found the row sending and left it unmarked,
    # and a failed send was tried again after the withdrawal.
    waiting = OutboxMessage.state == OutboxState.pending
    await session.execute(
        update(OutboxMessage)
        .where(*where, OutboxMessage.state.in_((OutboxState.pending, OutboxState.sending)))
        .values(
            state=case((waiting, OutboxState.failed), else_=OutboxMessage.state),
            last_error=WITHDRAWN,
            payload_enc=case((waiting, null()), else_=OutboxMessage.payload_enc),
            dek=case((waiting, null()), else_=OutboxMessage.dek),
        )
        .execution_options(synchronize_session=False)
    )


def handed_back() -> dict[str, Any]:
    """The values that give rows a dispatcher held (``sending``) back to the queue: its lease
    expired, or it stopped. One marked withdrawn while it was being sent (``withdraw_waiting``)
    is withdrawn instead, its text shredded: put back, it would be sent (a reminder after the
    check-in ended, anything after "delete my data")."""
    marked = OutboxMessage.last_error == WITHDRAWN
    return {
        "state": case((marked, OutboxState.failed), else_=OutboxState.pending),
        "payload_enc": case((marked, null()), else_=OutboxMessage.payload_enc),
        "dek": case((marked, null()), else_=OutboxMessage.dek),
        "lease_owner": None,
        "lease_until": None,
    }
