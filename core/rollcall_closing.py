"""Closing roll-calls: at their time (the sweep's job) or early (a responder), and the
``rollcall.closed`` event each of the organisation's webhooks gets (counts only)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from functools import partial

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import audit, outbox, webhook_events, webhooks
from core.claims import write_lock
from core.crypto import Vault
from core.db import retried, transaction
from core.models import Broadcast, Priority
from core.outbox import Item
from core.rollcalls import Tally, tally

CLOSED = "rollcall.closed"


def closed_body(rollcall: Broadcast, tally: Tally, *, event_id: str) -> bytes:
    """The ``rollcall.closed`` body: when, and how many answered what; ``alert`` is null.
    No text, no handles: the desk reads those in the API with its own credentials."""
    data = {
        "event_id": event_id,
        "type": CLOSED,
        "dedup_key": f"rollcall:{rollcall.id}",
        "org": str(rollcall.org_id),
        "alert": None,
        "rollcall": {
            "id": str(rollcall.id),
            "created_at": webhook_events.iso(rollcall.created_at),
            "closes_at": webhook_events.iso(rollcall.closes_at),
            "closed_at": webhook_events.iso(rollcall.closed_at),
            "recipients": tally.recipients,
            "safe": tally.safe,
            "help": tally.help,
            "unanswered": tally.unanswered,
        },
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


async def close(
    session: AsyncSession,
    vault: Vault,
    *,
    rollcall_id: uuid.UUID,
    now: datetime,
    actor: str | None = None,
) -> bool:
    """Close the roll-call (at its time, or early: ``actor`` is then audited) and queue its
    ``rollcall.closed`` event to each of the organisation's webhooks; False if it was
    already closed. Waits for answers being recorded (their shared lock), so the counts in
    the event are the final ones."""
    await write_lock(session)
    done = await session.execute(
        update(Broadcast)
        .where(
            Broadcast.id == rollcall_id,
            Broadcast.closes_at.is_not(None),
            Broadcast.closed_at.is_(None),
        )
        .values(closed_at=now)
        .returning(Broadcast.id)
        .execution_options(synchronize_session=False)
    )
    if done.first() is None:
        return False
    rollcall = await session.get(Broadcast, rollcall_id, populate_existing=True)
    assert rollcall is not None
    counted = await tally(session, rollcall_id)
    items = [
        Item(
            "webhook",
            int(Priority.P3),
            f"rc:{rollcall_id.hex}:{CLOSED}|webhook:{hook_id.hex}",
            raw=closed_body(rollcall, counted, event_id=uuid.uuid4().hex),
            webhook_id=hook_id,
            recipient="webhook",
        )
        for hook_id in await webhooks.endpoints(session, rollcall.org_id)
    ]
    await outbox.enqueue_many(session, vault, items, now=now)
    if actor is not None:
        await audit.record(
            session,
            vault,
            actor=actor,
            action="rollcall.close",
            target=str(rollcall_id),
            org_id=rollcall.org_id,
            now=now,
        )
    return True


async def close_due(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, now: datetime, *, limit: int = 100
) -> int:
    """Close the roll-calls whose time has come (the sweep's job), one transaction each;
    an idle sweep only reads (the partial index of open roll-calls)."""
    async with sessions() as reader:
        due = list(
            await reader.scalars(
                select(Broadcast.id)
                .where(
                    Broadcast.closes_at.is_not(None),
                    Broadcast.closed_at.is_(None),
                    Broadcast.closes_at <= now,
                )
                .order_by(Broadcast.closes_at)
                .limit(limit)
            )
        )
    closed = 0
    for rollcall_id in due:  # a transaction PostgreSQL aborts (a deadlock) is run again
        closing = partial(_closing, sessions, vault, rollcall_id, now)
        closed += await retried(closing, what="roll-call closing")
    return closed


async def _closing(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, rollcall_id: uuid.UUID, now: datetime
) -> bool:
    async with transaction(sessions) as session:
        return await close(session, vault, rollcall_id=rollcall_id, now=now)
