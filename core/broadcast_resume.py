"""Broadcasts whose fan-out was left unfinished, finished by the sweep.

A broadcast commits with the rows of its first chunk of defenders, and the other chunks follow
in transactions of their own (core.broadcasts). A process that stops in between (a crash, a
restart, a chunk that failed) leaves the broadcast's ``fan_out_since`` set. Once that is
older than ``LEASE`` (the request writing it has long finished or died), the sweep reads who
is reachable and has no recipient row yet, writes their rows a chunk per transaction, and
marks the fan-out finished; ``recipients`` is then the recipient rows counted.

Idempotent: a resume run twice, or by several workers at once, doubles nothing (the keys,
and one chunk of a broadcast written at a time: core.broadcast_chunks); on PostgreSQL a
worker passes over a broadcast another is writing a chunk of right now (``SKIP LOCKED``).
A roll-call that has closed, or whose time has come, gets no more messages (an answer would
no longer count): it is marked finished as it is.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Select, exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import rollcalls
from core.broadcast_chunks import Reach, finish, first_addresses, reachable
from core.crypto import Vault
from core.models import Broadcast, BroadcastRecipient, Defender
from core.sqlite import off_loop

# How long a fan-out may stay unfinished before the sweep takes it over: far longer than a
# request takes to write ten thousand defenders' chunks (about a second).
LEASE = timedelta(seconds=60)


def missing(
    org_id: uuid.UUID, broadcast_id: uuid.UUID
) -> Select[uuid.UUID, str, bool, uuid.UUID, str]:
    """``reachable``, less the defenders the broadcast already has a recipient row for."""
    has_row = exists().where(
        BroadcastRecipient.broadcast_id == broadcast_id,
        BroadcastRecipient.defender_id == Defender.id,
    )
    return reachable(org_id).where(~has_row)


async def resume_due(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, now: datetime, *, limit: int = 100
) -> int:
    """Finish the fan-outs left unfinished for longer than ``LEASE``; how many were. An idle
    sweep only reads (the partial index of unfinished fan-outs: empty, nearly always)."""
    async with sessions() as reader:
        due = list(
            await reader.scalars(
                select(Broadcast)
                .where(
                    Broadcast.fan_out_since.is_not(None),
                    Broadcast.fan_out_since < now - LEASE,
                )
                .order_by(Broadcast.fan_out_since)
                .limit(limit)
            )
        )
    done = 0
    for broadcast in due:
        done += await resume(sessions, vault, broadcast, now)
    return done


async def resume(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, broadcast: Broadcast, now: datetime
) -> bool:
    """Write the rows of each reachable defender ``broadcast`` has none for yet, and mark
    its fan-out finished; False if another worker is on it, or finished it meanwhile."""
    text = broadcast.get_text(vault, "text_enc")
    closes_at = broadcast.closes_at
    rollcall = closes_at is not None
    over = closes_at is not None and (broadcast.closed_at is not None or closes_at <= now)
    reach: list[Reach] = []
    async with sessions() as reader:
        conn = await reader.connection()
        dialect = conn.dialect
        if text is not None and not over:
            async with off_loop(reader):
                found = await conn.execute(missing(broadcast.org_id, broadcast.id))
            reach = await asyncio.to_thread(first_addresses, found)
    return await finish(
        sessions,
        vault,
        dialect,
        broadcast.id,
        reach,
        text or "",
        now=now,
        choices=partial(rollcalls.choices, broadcast.id) if rollcall else None,
        skip_locked=True,
    )
