"""The outbox: every outbound message is a row written in the caller's transaction.

Delivery (the dispatcher) happens after commit, never inside a transaction.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import Vault
from core.messages import Outbound
from core.models import ChannelAddress, OutboxMessage, Priority


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
        idempotency_key=key,
        next_attempt_at=now,
    )
    row.put(vault, "payload_enc", json.dumps(message.to_json(), ensure_ascii=False))
    session.add(row)
    return row


def payload(vault: Vault, row: OutboxMessage) -> Outbound:
    raw = row.get(vault, "payload_enc")
    if raw is None:
        raise ValueError(f"outbox row {row.id} has no payload (already delivered and shredded)")
    return Outbound.from_json(json.loads(raw))
