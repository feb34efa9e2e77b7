"""The outbox: every outbound message is a row written in the caller's transaction.

Delivery (``core.dispatch``) happens after commit, never inside a transaction; the commit
wakes the dispatcher of this process (``core.wakeup``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core import wakeup
from core.crypto import Vault
from core.messages import Outbound
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
    row.put(vault, "payload_enc", json.dumps(message.to_json(), ensure_ascii=False))
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


def _row(vault: Vault, item: Item, now: datetime, rendered: dict[int, bytes]) -> dict[str, Any]:
    # The same encryption as Encrypted.put, without building ORM objects (the sweep's hot path).
    # Each row has its own data key, so shredding one row never touches another.
    row_id = uuid.uuid4()
    dek = vault.new_dek()
    if item.raw is not None:
        raw = item.raw
    else:
        assert item.message is not None
        raw = rendered.get(id(item.message)) or b""
        if not raw:  # a message shared by many rows (a reminder) is serialised once
            raw = json.dumps(item.message.to_json(), ensure_ascii=False).encode()
            rendered[id(item.message)] = raw
    return {
        "id": row_id,
        "created_at": now,
        "dek": vault.wrap_dek(dek, TABLE, row_id),
        "payload_enc": vault.encrypt(dek, TABLE, "payload_enc", row_id, raw),
        "priority": item.priority,
        "channel": item.channel,
        "address_id": item.address_id,
        "webhook_id": item.webhook_id,
        "alert_id": item.alert_id,
        "recipient": item.recipient,
        "idempotency_key": item.key,
        "state": OutboxState.pending,
        "attempts": 0,
        "next_attempt_at": now,
    }


def rows(vault: Vault, items: list[Item], *, now: datetime) -> list[dict[str, Any]]:
    """Encrypted rows ready to insert: the costly part, done outside any transaction."""
    rendered: dict[int, bytes] = {}
    return [_row(vault, item, now, rendered) for item in items]


async def insert_rows(session: AsyncSession, ready: list[dict[str, Any]]) -> None:
    """Queue rows from ``rows`` in one statement; keys already queued are skipped."""
    if not ready:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(_TABLE).on_conflict_do_nothing(
            index_elements=["idempotency_key"]
        )
    elif dialect == "sqlite":
        stmt = sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["idempotency_key"])
    else:  # pragma: no cover - only the two supported backends
        stmt = insert(_TABLE)
    await session.execute(stmt, ready)
    wakeup.touch(session, wakeup.OUTBOX)


async def enqueue_many(
    session: AsyncSession, vault: Vault, items: list[Item], *, now: datetime
) -> None:
    """Queue many messages in one statement; keys already queued are skipped, not an error."""
    await insert_rows(session, rows(vault, items, now=now))


def payload(vault: Vault, row: OutboxMessage) -> Outbound:
    raw = row.get(vault, "payload_enc")
    if raw is None:
        raise ValueError(f"outbox row {row.id} has no payload (already delivered and shredded)")
    return Outbound.from_json(json.loads(raw))
