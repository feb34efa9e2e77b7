"""A broadcast's rows, a chunk of defenders at a time: who it reaches, and for each one an
outbox row (P3, in their language, framed as coming from their desk, through their best
address) and a recipient row.

SQLite has one writer: the rows of ten thousand defenders in one transaction held its lock
for 0.3-0.45 s, and a panic arriving meanwhile waited for it (DESIGN.md: a panic never waits
behind a broadcast). So a fan-out is written ``CHUNK`` defenders per transaction, each chunk
rendered, encrypted and bound in a worker thread before its transaction begins; other
writers take their turn between chunks.

Nothing lost, nothing doubled. The outbox key is per (broadcast, defender), and both inserts
skip rows already there (``ON CONFLICT DO NOTHING``: on the outbox's key, on the recipients'
primary key). A chunk's two inserts commit together, and the chunks of one broadcast are
written one at a time, whoever writes them (the request, or the sweep's resume on any
worker): each chunk's transaction first takes the broadcast's row (SQLite's write lock;
PostgreSQL: ``FOR NO KEY UPDATE``). So an outbox row skipped as already queued always has its
recipient row, skipped too: a recipient row never names an outbox row that was not written.
``Broadcast.fan_out_since`` is set while the fan-out is unfinished; the last chunk clears it
and counts the recipient rows into ``recipients``, in its transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Select, Table, distinct, exists, func, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import bulk, i18n, outbox
from core.claims import locked, write_lock
from core.crypto import Vault
from core.db import retried, transaction
from core.messages import Choice, Outbound
from core.models import (
    Alert,
    Broadcast,
    BroadcastRecipient,
    ChannelAddress,
    Defender,
    DefenderStatus,
    Priority,
)
from core.outbox import Item

# Defenders per transaction: SQLite's write lock is held about 15-25 ms for each (about
# 0.3-0.45 s for ten thousand in one), a few commits a second at most for a whole fan-out.
CHUNK = 500
_RECIPIENTS: Table = BroadcastRecipient.__table__  # type: ignore[assignment]
Answers = Callable[[str], tuple[Choice, ...]]  # a roll-call's answers in a language
Rows = tuple[bulk.Bound, bulk.Bound]  # a chunk's outbox rows and recipient rows, bound


# Who the desk writes to: an enrolled defender, their check-ins paused or not (a pause holds
# deadlines; a roll-call after a raid is for everyone in the network).
_ENROLLED = (DefenderStatus.active, DefenderStatus.paused)


@dataclass(frozen=True)
class Reach:
    """An enrolled defender and the best address to reach them at."""

    defender_id: uuid.UUID
    locale: str
    discreet: bool
    address_id: uuid.UUID
    channel: str


def reachable(org_id: uuid.UUID) -> Select[uuid.UUID, str, bool, uuid.UUID, str]:
    """Every enrolled defender of the organisation (active or paused) with an address, each
    address a row, in the order ``core.recipients`` picks them (unblocked first, then by
    preference): ``first_addresses`` keeps the first of each. Never one with an open alert
    flagged "do not contact the device" (duress, a changed safety number): a message from
    the desk on a phone in other hands would betray them."""
    wary = exists().where(
        Alert.defender_id == Defender.id,
        Alert.open_key.is_not(None),
        Alert.do_not_contact.is_(True),
    )
    return (
        select(
            Defender.id,
            Defender.locale,
            Defender.discreet,
            ChannelAddress.id,
            ChannelAddress.channel,
        )
        .join(ChannelAddress, ChannelAddress.defender_id == Defender.id)
        .where(Defender.org_id == org_id, Defender.status.in_(_ENROLLED), ~wary)
        .order_by(
            Defender.id,
            ChannelAddress.blocked_at.is_not(None),
            ChannelAddress.preference,
            ChannelAddress.id,
        )
    )


async def reach_count(session: AsyncSession, org_id: uuid.UUID) -> int:
    """How many defenders a broadcast or a roll-call sent now would reach (``reachable``):
    what the desk is told before it sends."""
    count = reachable(org_id).with_only_columns(func.count(distinct(Defender.id)))
    return int((await session.execute(count.order_by(None))).scalar_one())


def first_addresses(rows: Iterable[Any]) -> list[Reach]:
    """Each defender's first address among ``rows`` (of ``reachable``)."""
    found: dict[uuid.UUID, Reach] = {}
    for defender_id, locale, discreet, address_id, channel in rows:
        if defender_id not in found:
            found[defender_id] = Reach(defender_id, locale, discreet, address_id, channel)
    return list(found.values())


def message(
    locale: str, text: str, *, discreet: bool, choices: tuple[Choice, ...] = ()
) -> Outbound:
    _ = i18n.gettext(locale)
    # Discreet mode (someone may look at the phone before the message is deleted): the bot
    # does not say what stands behind it there (R9).
    framing = (
        _("Message from your group:") if discreet else _("Message from your protection desk:")
    )
    return Outbound(text=f"{framing}\n\n{text}", choices=choices, sensitive=discreet)


def key(broadcast_id: uuid.UUID, defender_id: uuid.UUID) -> str:
    return f"b:{broadcast_id.hex}:{defender_id.hex}"


_RECIPIENTS_INSERT = bulk.BulkInsert(
    _RECIPIENTS,
    ("broadcast_id", "defender_id", "outbox_id"),
    shared=("broadcast_id",),
    skip_conflicts_on=("broadcast_id", "defender_id"),
)


def bind(
    dialect: Dialect,
    vault: Vault,
    broadcast_id: uuid.UUID,
    reach: list[Reach],
    text: str,
    now: datetime,
    choices: Answers | None,
) -> Rows:
    """A chunk's outbox rows (rendered once per language and discreet mode, each encrypted)
    and recipient rows, bound for the driver: no database needed (run it in a worker thread,
    before the chunk's transaction)."""
    rendered: dict[tuple[str, bool], Outbound] = {}
    items = []
    for r in reach:
        msg = rendered.get((r.locale, r.discreet))
        if msg is None:
            extra = () if choices is None else choices(r.locale)
            msg = message(r.locale, text, discreet=r.discreet, choices=extra)
            rendered[(r.locale, r.discreet)] = msg
        items.append(
            Item(
                r.channel,
                int(Priority.P3),
                key(broadcast_id, r.defender_id),
                msg,
                address_id=r.address_id,
                recipient="defender",
            )
        )
    ready = outbox.rows(vault, items, now=now)
    recipients = [
        {"broadcast_id": broadcast_id, "defender_id": r.defender_id, "outbox_id": row["id"]}
        for r, row in zip(reach, ready, strict=True)
    ]
    return outbox.bound(dialect, ready), _RECIPIENTS_INSERT.bind(dialect, recipients)


async def write(session: AsyncSession, rows: Rows) -> None:
    """A chunk's rows, in the session's transaction; those already there are skipped."""
    await outbox.insert_bound(session, rows[0])
    await bulk.run(session, rows[1])


async def finish(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    dialect: Dialect,
    broadcast_id: uuid.UUID,
    reach: list[Reach],
    text: str,
    *,
    now: datetime,
    choices: Answers | None = None,
    skip_locked: bool = False,
) -> bool:
    """Write ``reach``'s rows ``CHUNK`` defenders per transaction, and mark the fan-out
    finished with the last chunk (with none: at once). False if it stopped early: the
    fan-out was finished meanwhile, or (``skip_locked``, PostgreSQL) another worker is
    writing a chunk of it right now, and goes on with it."""
    chunks = [reach[i : i + CHUNK] for i in range(0, len(reach), CHUNK)] or [[]]
    for n, chunk in enumerate(chunks):
        rows = await asyncio.to_thread(
            bind, dialect, vault, broadcast_id, chunk, text, now, choices
        )
        last = n == len(chunks) - 1
        one = partial(_chunk, sessions, broadcast_id, rows, last=last, skip_locked=skip_locked)
        if not await retried(one, what="broadcast fan-out"):
            return False
    return True


async def _chunk(
    sessions: async_sessionmaker[AsyncSession],
    broadcast_id: uuid.UUID,
    rows: Rows,
    *,
    last: bool,
    skip_locked: bool,
) -> bool:
    """One chunk in a transaction of its own, once its broadcast's row is taken."""
    async with transaction(sessions) as s:
        await write_lock(s)
        mine = (Broadcast.id == broadcast_id) & Broadcast.fan_out_since.is_not(None)
        taken = select(Broadcast.id).where(mine)
        if (await s.execute(locked(taken, s, skip=skip_locked, key_share=True))).first() is None:
            return False
        await write(s, rows)
        if last:
            written = (
                select(func.count())
                .where(BroadcastRecipient.broadcast_id == broadcast_id)
                .scalar_subquery()
            )
            await s.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id)
                .values(fan_out_since=None, recipients=written)
                .execution_options(synchronize_session=False)
            )
        return True
