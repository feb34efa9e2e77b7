"""Broadcasts: one message from the desk to every active defender of its organisation.

Each defender gets it at P3 (a panic never waits behind it: the dispatcher takes rows by
priority), in their own language, framed as coming from their desk, through their best
address. The whole fan-out is one insert of outbox rows and one of recipient rows, in the
caller's transaction; the outbox key is per (broadcast, defender), so a repeat queues nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, case, exists, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit, bulk, i18n, outbox
from core.crypto import Vault
from core.messages import Choice, Outbound
from core.models import (
    Alert,
    Broadcast,
    BroadcastRecipient,
    ChannelAddress,
    Defender,
    DefenderStatus,
    OutboxMessage,
    OutboxState,
    Priority,
)
from core.outbox import Item
from core.sqlite import off_loop

MAX_TEXT = 2000  # with the framing line, well within one Telegram or Signal message
PAGE = 100
_RECIPIENTS: Table = BroadcastRecipient.__table__  # type: ignore[assignment]


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
    framing = _("Message from your protection desk:")
    return Outbound(text=f"{framing}\n\n{text}", choices=choices, sensitive=discreet)


def key(broadcast_id: uuid.UUID, defender_id: uuid.UUID) -> str:
    return f"b:{broadcast_id.hex}:{defender_id.hex}"


async def fan_out(
    session: AsyncSession,
    vault: Vault,
    broadcast: Broadcast,
    text: str,
    *,
    now: datetime,
    choices: Callable[[str], tuple[Choice, ...]] | None = None,
) -> int:
    """Write ``broadcast`` and queue it for every reachable defender (``choices``: a
    roll-call's answers in a language); returns how many.

    All but the writes is done first, away from the event loop: the read of who is reachable
    on the driver's thread (``core.sqlite.off_loop``); the rendering (once per language and
    discreet mode), the encryption and the binding of every row in a worker thread. For ten
    thousand defenders that is most of a second, which the process's other work (a panic
    coming in) no longer waits for, and SQLite's one write lock, taken by the first write
    below, is not held meanwhile: the transaction then only runs two inserts."""
    conn = await session.connection()
    async with off_loop(session):  # read here; the rows are converted in the worker thread
        found = await conn.execute(reachable(broadcast.org_id))
    reach, rows, recipients = await asyncio.to_thread(
        _bound, conn.dialect, vault, broadcast.id, found, text, now, choices
    )
    broadcast.recipients = len(reach)
    session.add(broadcast)
    await session.flush()
    await outbox.insert_bound(session, rows)
    await bulk.run(session, recipients)
    return len(reach)


_RECIPIENTS_INSERT = bulk.BulkInsert(
    _RECIPIENTS, ("broadcast_id", "defender_id", "outbox_id"), shared=("broadcast_id",)
)


def _bound(
    dialect: Dialect,
    vault: Vault,
    broadcast_id: uuid.UUID,
    found: Iterable[Any],
    text: str,
    now: datetime,
    choices: Callable[[str], tuple[Choice, ...]] | None,
) -> tuple[list[Reach], bulk.Bound, bulk.Bound]:
    """Who ``found`` reaches, the broadcast's outbox rows (encrypted) and its recipient rows,
    both bound for the driver (``fan_out`` runs this in a worker thread: ``found`` is a
    result the driver read whole, so converting its rows needs no database)."""
    reach = first_addresses(found)
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
    return reach, outbox.bound(dialect, ready), _RECIPIENTS_INSERT.bind(dialect, recipients)


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
    """How each broadcast's messages fared, from their outbox rows: one grouped query."""
    if not ids:
        return {}
    stmt = (
        select(
            BroadcastRecipient.broadcast_id,
            func.count(),
            func.sum(case((_DELIVERED, 1), else_=0)),
            func.sum(case((_FAILED, 1), else_=0)),
        )
        .outerjoin(OutboxMessage, OutboxMessage.id == BroadcastRecipient.outbox_id)
        .where(BroadcastRecipient.broadcast_id.in_(ids))
        .group_by(BroadcastRecipient.broadcast_id)
    )
    found = {}
    for broadcast_id, total, delivered, failed in await session.execute(stmt):
        delivered, failed = int(delivered or 0), int(failed or 0)
        found[broadcast_id] = Counts(delivered, failed, int(total) - delivered - failed)
    return found


async def recent(
    session: AsyncSession, org_id: uuid.UUID, *, rollcalls: bool = False, limit: int = PAGE
) -> list[Broadcast]:
    """The organisation's latest broadcasts (or roll-calls), newest first."""
    kind = Broadcast.closes_at.is_not(None) if rollcalls else Broadcast.closes_at.is_(None)
    stmt = (
        select(Broadcast)
        .where(Broadcast.org_id == org_id, kind)
        .order_by(Broadcast.created_at.desc(), Broadcast.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())
