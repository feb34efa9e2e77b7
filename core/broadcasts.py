"""Broadcasts: one message from the desk to every active defender of its organisation.

Each defender gets it at P3 (a panic never waits behind it: the dispatcher takes rows by
priority), in their own language, framed as coming from their desk, through their best
address (``core.broadcast_chunks``). ``send`` writes the broadcast, its audit entry and the
rows of its first ``CHUNK`` defenders in the caller's transaction: a broadcast to no more
than that is written whole there, as one unit. A larger one's other chunks are written after
that commit, before the caller goes on (``core.db.then``: the request answers once all are
queued), each in a transaction of its own, so that SQLite's one write lock is free between
them; the sweep resumes a fan-out left unfinished (``core.broadcast_resume``). The outbox key
is per (broadcast, defender), so a repeat queues nothing.

While a fan-out is unfinished, ``recipients`` already says how many it is for, and the counts
take the defenders whose rows are not written yet as pending (a roll-call's: unanswered).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from core import audit, broadcast_chunks, db
from core.broadcast_chunks import Answers, Reach, Rows, first_addresses, reachable
from core.crypto import Vault
from core.messages import Choice
from core.models import Broadcast, BroadcastRecipient, OutboxMessage, OutboxState
from core.sqlite import off_loop

log = logging.getLogger(__name__)
MAX_TEXT = 2000  # with the framing line, well within one Telegram or Signal message
PAGE = 100


async def fan_out(
    session: AsyncSession,
    vault: Vault,
    broadcast: Broadcast,
    text: str,
    *,
    now: datetime,
    choices: Answers | None = None,
) -> int:
    """Write ``broadcast`` and queue it for every reachable defender (``choices``: a
    roll-call's answers in a language); returns how many.

    All but the writes is done first, away from the event loop: the read of who is reachable
    on the driver's thread (``core.sqlite.off_loop``); the rendering, the encryption and the
    binding of the first chunk's rows in a worker thread (the later chunks': each before its
    own transaction). SQLite's one write lock, taken by the first write below, is not held
    meanwhile: the transaction then only runs a few inserts, and so does each later chunk's."""
    conn = await session.connection()
    async with off_loop(session):  # read here; the rows are converted in the worker thread
        found = await conn.execute(reachable(broadcast.org_id))
    reach, rows = await asyncio.to_thread(
        _first, conn.dialect, vault, broadcast.id, found, text, now, choices
    )
    rest = reach[broadcast_chunks.CHUNK :]
    broadcast.recipients = len(reach)
    broadcast.fan_out_since = now if rest else None
    session.add(broadcast)
    await session.flush()
    await broadcast_chunks.write(session, rows)
    if rest:
        engine = session.bind
        assert isinstance(engine, AsyncEngine)
        more = partial(_rest, engine, vault, conn.dialect, broadcast.id, rest, text, now, choices)
        db.then(session, more)
    return len(reach)


def _first(
    dialect: Dialect,
    vault: Vault,
    broadcast_id: uuid.UUID,
    found: Iterable[Any],
    text: str,
    now: datetime,
    choices: Answers | None,
) -> tuple[list[Reach], Rows]:
    """Who ``found`` reaches, and the first chunk's rows (``fan_out`` runs this in a worker
    thread: ``found`` is a result the driver read whole, so converting its rows needs no
    database)."""
    reach = first_addresses(found)
    first = reach[: broadcast_chunks.CHUNK]
    rows = broadcast_chunks.bind(dialect, vault, broadcast_id, first, text, now, choices)
    return reach, rows


async def _rest(
    engine: AsyncEngine,
    vault: Vault,
    dialect: Dialect,
    broadcast_id: uuid.UUID,
    rest: list[Reach],
    text: str,
    now: datetime,
    choices: Answers | None,
) -> None:
    """The chunks after the first, once the caller's transaction (the broadcast, its audit
    entry, the first chunk) has committed. Should one fail, the broadcast is queued all the
    same: the sweep resumes its fan-out (``core.broadcast_resume``); the caller is not told
    otherwise, lest the desk send it again."""
    sessions = db.sessionmaker(engine)
    try:
        await broadcast_chunks.finish(
            sessions, vault, dialect, broadcast_id, rest, text, now=now, choices=choices
        )
    except Exception:
        log.exception(
            "broadcast fan-out stopped; the sweep resumes it",
            extra={"broadcast": str(broadcast_id)},
        )


async def send(
    session: AsyncSession,
    vault: Vault,
    *,
    org_id: uuid.UUID,
    text: str,
    actor: str,
    now: datetime,
    closes_at: datetime | None = None,
    choices: Callable[[uuid.UUID, str], tuple[Choice, ...]] | None = None,
) -> Broadcast:
    """A new broadcast (a roll-call: with ``closes_at`` and its ``choices``, by id and
    language), queued for every reachable defender and written in the audit log (its id and
    how many it reached: never its text)."""
    broadcast = Broadcast(
        id=uuid.uuid4(), org_id=org_id, sent_by=actor, created_at=now, closes_at=closes_at
    )
    broadcast.put(vault, "text_enc", text)
    answers = None if choices is None else (lambda locale: choices(broadcast.id, locale))
    broadcast.recipients = await fan_out(session, vault, broadcast, text, now=now, choices=answers)
    await audit.record(
        session,
        vault,
        actor=actor,
        action="broadcast.send" if closes_at is None else "rollcall.start",
        target=str(broadcast.id),
        org_id=org_id,
        detail={"recipients": broadcast.recipients},
        now=now,
    )
    return broadcast


@dataclass(frozen=True)
class Counts:
    delivered: int = 0
    failed: int = 0
    pending: int = 0  # queued or being sent (or no longer known: its row was purged)


_DELIVERED = OutboxMessage.state == OutboxState.delivered
_FAILED = OutboxMessage.state.in_((OutboxState.failed, OutboxState.dead))


async def counts(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, Counts]:
    """How each broadcast's messages fared, from their outbox rows: one grouped query. While
    a fan-out is unfinished, the defenders whose rows are not written yet count as pending."""
    if not ids:
        return {}
    stmt = (
        select(
            BroadcastRecipient.broadcast_id,
            Broadcast.recipients,
            Broadcast.fan_out_since,
            func.count(),
            func.sum(case((_DELIVERED, 1), else_=0)),
            func.sum(case((_FAILED, 1), else_=0)),
        )
        .join(Broadcast, Broadcast.id == BroadcastRecipient.broadcast_id)
        .outerjoin(OutboxMessage, OutboxMessage.id == BroadcastRecipient.outbox_id)
        .where(BroadcastRecipient.broadcast_id.in_(ids))
        .group_by(BroadcastRecipient.broadcast_id, Broadcast.recipients, Broadcast.fan_out_since)
    )
    found = {}
    for broadcast_id, recipients, unfinished, total, delivered, failed in await session.execute(
        stmt
    ):
        total = int(total) if unfinished is None else max(int(total), recipients)
        delivered, failed = int(delivered or 0), int(failed or 0)
        found[broadcast_id] = Counts(delivered, failed, total - delivered - failed)
    return found


async def recent(
    session: AsyncSession,
    org_id: uuid.UUID,
    *,
    rollcalls: bool = False,
    before: tuple[datetime, uuid.UUID] | None = None,
    limit: int = PAGE,
) -> list[Broadcast]:
    """The organisation's latest broadcasts (or roll-calls), newest first; ``before``: only
    those older than that (created_at, id), the last of the page before."""
    kind = Broadcast.closes_at.is_not(None) if rollcalls else Broadcast.closes_at.is_(None)
    stmt = select(Broadcast).where(Broadcast.org_id == org_id, kind)
    if before is not None:
        at, row_id = before
        older = (Broadcast.created_at < at) | (
            (Broadcast.created_at == at) & (Broadcast.id < row_id)
        )
        stmt = stmt.where(older)
    stmt = stmt.order_by(Broadcast.created_at.desc(), Broadcast.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())
