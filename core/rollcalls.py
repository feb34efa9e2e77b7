"""Roll-calls: "everyone check in now". A broadcast whose message offers two answers, "I'm
safe" and "I need help", open until its closing time.

Each recipient's answer is kept on their recipient row (one per roll-call and defender); a
later answer replaces an earlier one until the roll-call closes. Answering takes a shared lock
on the roll-call's row and closing (core.rollcall_closing) an exclusive one (PostgreSQL;
SQLite has one writer): an answer either lands before the closing, and is counted in it, or
sees the roll-call closed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import broadcasts, i18n
from core.claims import locked, write_lock
from core.crypto import Vault
from core.messages import Choice
from core.models import Broadcast, BroadcastRecipient, Defender

SAFE, HELP = "safe", "help"
PREFIX = "rollcall:"
MAX_MINUTES = 24 * 60  # a button's token lives 24 hours (core.callbacks.TTL)
# How long after closing a typed answer is still taken as one (and told the roll-call has
# closed) rather than as whatever else those words mean: as long as its buttons work.
LATE = timedelta(hours=24)


class Outcome(StrEnum):
    recorded = "recorded"
    closed = "closed"  # too late: not recorded
    unknown = "unknown"  # no such roll-call sent to this defender


@dataclass(frozen=True)
class Answered:
    outcome: Outcome
    previous: str | None = None  # the answer it replaced


def choice_key(answer: str, rollcall_id: uuid.UUID) -> str:
    """A button's key: bound to the chat by its opaque token (core.callbacks, R4)."""
    return f"{PREFIX}{answer}:{rollcall_id.hex}"


def parse(key: str) -> tuple[str, uuid.UUID] | None:
    if not key.startswith(PREFIX):
        return None
    answer, _sep, hexid = key.removeprefix(PREFIX).partition(":")
    try:
        rollcall_id = uuid.UUID(hex=hexid)
    except ValueError:
        return None
    return (answer, rollcall_id) if answer in (SAFE, HELP) else None


def choices(rollcall_id: uuid.UUID, locale: str) -> tuple[Choice, ...]:
    _ = i18n.gettext(locale)
    return (
        Choice(choice_key(SAFE, rollcall_id), _("I'm safe")),
        Choice(choice_key(HELP, rollcall_id), _("I need help")),
    )


async def start(
    session: AsyncSession,
    vault: Vault,
    *,
    org_id: uuid.UUID,
    text: str,
    closes_in: timedelta,
    actor: str,
    now: datetime,
) -> Broadcast:
    return await broadcasts.send(
        session,
        vault,
        org_id=org_id,
        text=text,
        actor=actor,
        now=now,
        closes_at=now + closes_in,
        choices=choices,
    )


def is_open(rollcall: Broadcast, now: datetime) -> bool:
    return (
        rollcall.closed_at is None and rollcall.closes_at is not None and now < rollcall.closes_at
    )


async def takes_answers(
    session: AsyncSession, *, rollcall_id: uuid.UUID, defender_id: uuid.UUID, now: datetime
) -> bool:
    """Sent to the defender and still open: worth asking them for the PIN that an "I'm safe"
    takes (flows.rollcall). Only a look: ``answer`` decides, under its lock."""
    stmt = (
        select(Broadcast)
        .join(BroadcastRecipient, BroadcastRecipient.broadcast_id == Broadcast.id)
        .where(Broadcast.id == rollcall_id, BroadcastRecipient.defender_id == defender_id)
    )
    found = await session.scalar(stmt)
    return found is not None and is_open(found, now)


async def unanswered(
    session: AsyncSession, *, defender_id: uuid.UUID, now: datetime
) -> list[uuid.UUID]:
    """The open roll-calls sent to the defender that they have not answered yet."""
    stmt = (
        select(Broadcast.id)
        .join(BroadcastRecipient, BroadcastRecipient.broadcast_id == Broadcast.id)
        .where(
            BroadcastRecipient.defender_id == defender_id,
            BroadcastRecipient.answer.is_(None),
            Broadcast.closes_at > now,
            Broadcast.closed_at.is_(None),
        )
    )
    return list(await session.scalars(stmt))


async def answer(
    session: AsyncSession,
    *,
    rollcall_id: uuid.UUID,
    defender_id: uuid.UUID,
    said: str,
    now: datetime,
) -> Answered:
    """Record ``said`` as the defender's answer while the roll-call is open."""
    await write_lock(session)
    # populate_existing: the row as it is once locked, not as this session read it before
    # (the router's latest_for) while a closing may have committed since.
    stmt = select(Broadcast).where(Broadcast.id == rollcall_id)
    rollcall = await session.scalar(
        locked(stmt, session, read=True).execution_options(populate_existing=True)
    )
    mine = (BroadcastRecipient.broadcast_id == rollcall_id) & (
        BroadcastRecipient.defender_id == defender_id
    )
    row = await session.execute(select(BroadcastRecipient.answer).where(mine))
    previous = row.first()
    if rollcall is None or rollcall.closes_at is None or previous is None:
        return Answered(Outcome.unknown)
    if not is_open(rollcall, now):
        return Answered(Outcome.closed)
    await session.execute(
        update(BroadcastRecipient)
        .where(mine)
        .values(answer=said, answered_at=now)
        .execution_options(synchronize_session=False)
    )
    return Answered(Outcome.recorded, previous[0])


async def latest_for(
    session: AsyncSession, defender_id: uuid.UUID, *, now: datetime
) -> Broadcast | None:
    """The last roll-call sent to the defender, open or closed less than ``LATE`` ago."""
    stmt = (
        select(Broadcast)
        .join(BroadcastRecipient, BroadcastRecipient.broadcast_id == Broadcast.id)
        .where(
            BroadcastRecipient.defender_id == defender_id,
            Broadcast.closes_at.is_not(None),
            func.coalesce(Broadcast.closed_at, Broadcast.closes_at) > now - LATE,
        )
        .order_by(Broadcast.created_at.desc())
        .limit(1)
    )
    return await session.scalar(stmt)


@dataclass(frozen=True)
class Tally:
    recipients: int
    safe: int
    help: int
    unanswered: int


async def tally(session: AsyncSession, rollcall_id: uuid.UUID) -> Tally:
    return (await tallies(session, [rollcall_id]))[rollcall_id]


async def tallies(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, Tally]:
    """Each roll-call's answers counted: one grouped query for them all. While its fan-out
    is unfinished, the defenders whose rows are not written yet count as unanswered."""
    stmt = (
        select(
            BroadcastRecipient.broadcast_id,
            BroadcastRecipient.answer,
            func.count(),
            Broadcast.recipients,
            Broadcast.fan_out_since,
        )
        .join(Broadcast, Broadcast.id == BroadcastRecipient.broadcast_id)
        .where(BroadcastRecipient.broadcast_id.in_(ids))
        .group_by(
            BroadcastRecipient.broadcast_id,
            BroadcastRecipient.answer,
            Broadcast.recipients,
            Broadcast.fan_out_since,
        )
    )
    found: dict[uuid.UUID, dict[str | None, int]] = {i: {} for i in ids}
    planned: dict[uuid.UUID, int] = {}
    for rollcall_id, answer, n, recipients, unfinished in (
        await session.execute(stmt) if ids else ()
    ):
        found[rollcall_id][answer] = int(n)
        if unfinished is not None:
            planned[rollcall_id] = recipients
    for rollcall_id, recipients in planned.items():
        c = found[rollcall_id]
        c[None] = c.get(None, 0) + max(0, recipients - sum(c.values()))
    return {
        i: Tally(sum(c.values()), c.get(SAFE, 0), c.get(HELP, 0), c.get(None, 0))
        for i, c in found.items()
    }


@dataclass(frozen=True)
class Line:
    handle: str
    answer: str | None
    answered_at: datetime | None


async def answers(session: AsyncSession, rollcall_id: uuid.UUID) -> list[Line]:
    """Each recipient by handle (never a name or an address), those yet to answer included."""
    stmt = (
        select(Defender.handle, BroadcastRecipient.answer, BroadcastRecipient.answered_at)
        .join(Defender, Defender.id == BroadcastRecipient.defender_id)
        .where(BroadcastRecipient.broadcast_id == rollcall_id)
        .order_by(Defender.handle)
    )
    return [Line(*row) for row in await session.execute(stmt)]


async def get(
    session: AsyncSession, org_id: uuid.UUID, rollcall_id: uuid.UUID
) -> Broadcast | None:
    """The organisation's roll-call (another organisation's, or a plain broadcast: None)."""
    found = await session.get(Broadcast, rollcall_id)
    if found is None or found.org_id != org_id or found.closes_at is None:
        return None
    return found
