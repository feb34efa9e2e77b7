"""Persistence for the engine: message ids seen, the conversation row, the reply in the outbox.

The conversation is one row per defender (or per address, before someone is a defender):
``(flow, state)`` in clear for routing and the sweep, the data encrypted with the row's own key.
``version`` is the mapper's version column, so a concurrent writer raises ``StaleDataError``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core import discreet
from core.claims import locked
from core.crypto import Vault
from core.defenders import new_address
from core.messages import Inbound, Outbound
from core.models import (
    GONE,
    ChannelAddress,
    Conversation,
    Defender,
    DefenderStatus,
    Priority,
    SeenInbound,
)
from core.outbox import Item, enqueue_many
from core.pins import Verdict

IDLE = "idle"
EXPIRED = "expired"  # idle, and the next message first hears that the last conversation closed
SEEN_FOR = timedelta(hours=72)  # R2: message ids are remembered at least this long
# A P0 reply is due this much before the moment it is written: the dispatcher takes each
# priority oldest first, so it goes ahead of the alarm's notices queued with it (R8).
AHEAD = timedelta(seconds=1)


@dataclass
class Event:
    session: AsyncSession
    vault: Vault
    inbound: Inbound
    index: bytes  # blind index of the sender's address
    now: datetime
    checker: Callable[[Defender, str], Awaitable[Verdict]] | None


@dataclass
class Loaded:
    address: ChannelAddress
    defender: Defender | None
    row: Conversation | None
    flow: str
    state: str
    data: dict[str, Any]
    hidden: Defender | None = None  # the owner, hidden after a forced deletion: a stranger here


def _seen_insert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(SeenInbound.__table__).on_conflict_do_nothing()  # type: ignore[arg-type]


# Built once: composing a statement costs more than running it on the hot path (profiled).
_SEEN = {d: _seen_insert(d) for d in ("postgresql", "sqlite")}
_ADDRESS = (
    select(ChannelAddress, Defender)
    .outerjoin(Defender, Defender.id == ChannelAddress.defender_id)
    .where(
        ChannelAddress.channel == bindparam("channel"),
        ChannelAddress.blind_index == bindparam("index"),
    )
)
# During ``amparo keys rotate-index``: the row under either key (it may have moved since the
# event's index was worked out: the rows move in one transaction, once).
_EITHER = (
    select(ChannelAddress, Defender)
    .outerjoin(Defender, Defender.id == ChannelAddress.defender_id)
    .where(
        ChannelAddress.channel == bindparam("channel"),
        ChannelAddress.blind_index.in_(bindparam("indexes", expanding=True)),
    )
)
_BY_DEFENDER = select(Conversation).where(Conversation.defender_id == bindparam("owner"))
_BY_ADDRESS = select(Conversation).where(Conversation.address_id == bindparam("owner"))


async def mark_seen(event: Event) -> bool:
    """Record the channel's message id; False if it was handled before (a replay).

    The first statement of every event's transaction: as a write, it also takes SQLite's write
    lock before anything is read (see ``core.claims``).
    """
    key = event.vault.blind_index(f"inbound:{event.inbound.channel}", event.inbound.message_id)
    values = {"channel": event.inbound.channel, "key": key, "seen_at": event.now}
    dialect = event.session.get_bind().dialect.name
    result = await event.session.execute(_SEEN[dialect], values)
    return bool(getattr(result, "rowcount", 0))


async def load(event: Event) -> Loaded:
    session = event.session
    where = {"channel": event.inbound.channel, "index": event.index}
    found = (await session.execute(_ADDRESS, where)).first()
    if found is None and len(event.vault.keyring.address_lookup_keys) > 1:
        indexes = event.vault.address_indexes(event.inbound.channel, event.inbound.address)
        either = {"channel": event.inbound.channel, "indexes": indexes}
        found = (await session.execute(_EITHER, either)).first()
    if found is None:
        address = new_address(event.vault, event.inbound.channel, event.inbound.address)
        session.add(address)
        await session.flush()
        defender = None
    else:
        address, defender = found
    hidden = None
    if defender is not None and defender.status in GONE:
        hidden = defender if defender.status is DefenderStatus.hidden else None
        defender = None
    query, owner = (
        (_BY_DEFENDER, defender.id) if defender is not None else (_BY_ADDRESS, address.id)
    )
    row = (await session.execute(locked(query, session), {"owner": owner})).scalar()
    if row is None:
        return Loaded(address, defender, None, IDLE, IDLE, {}, hidden)
    raw = row.get_text(event.vault, "data_enc")
    data = dict(json.loads(raw)) if raw else {}
    if row.expires_at is not None and row.expires_at <= event.now:
        return Loaded(address, defender, row, IDLE, EXPIRED, {}, hidden)
    return Loaded(address, defender, row, row.flow, row.state, data, hidden)


async def save(
    event: Event,
    loaded: Loaded,
    defender: Defender | None,
    *,
    flow: str,
    state: str,
    data: dict[str, Any],
    ttl: timedelta | None,
) -> None:
    row = loaded.row
    if row is not None and defender is not None and row.defender_id != defender.id:
        await event.session.delete(row)  # someone just became a defender: re-keyed below
        await event.session.flush()
        row = None
    if row is None:
        if flow == IDLE and not data:
            return
        row = Conversation(id=uuid.uuid4(), version=1)
        if defender is not None:
            row.defender_id = defender.id
        else:
            row.address_id = loaded.address.id
        event.session.add(row)
    elif (row.flow, row.state) == (flow, state) and data == loaded.data and flow == IDLE:
        return  # nothing happened that the next message needs: no write
    row.flow, row.state = flow, state
    row.put(event.vault, "data_enc", json.dumps(data, ensure_ascii=False) if data else None)
    row.updated_at = event.now
    row.expires_at = None if ttl is None or flow == IDLE else event.now + ttl
    await event.session.flush()


async def reply(
    event: Event,
    to: ChannelAddress,
    message: Outbound,
    *,
    priority: Priority,
    recipient: str | None,
) -> None:
    seen = event.vault.blind_index(f"inbound:{event.inbound.channel}", event.inbound.message_id)
    item = Item(
        to.channel,
        int(priority),
        f"reply:{seen.hex()}",
        message=message,
        address_id=to.id,
        recipient=recipient,
    )
    # The phone's answer to an alarm or a PIN (P0) goes before the notices its message queued
    # on the same channel (a duress PIN's to the desk and contacts, a call-off's all-clears):
    # behind them it would come later after the duress PIN than after the cancel PIN, as
    # late as those notices outnumber what the channel may send at once (R8).
    at = event.now - AHEAD if priority is Priority.P0 else None
    await enqueue_many(event.session, event.vault, [item], now=event.now, at=at)


async def forget_later(
    event: Event, to: ChannelAddress, defender: Defender | None, deleted: list[str]
) -> None:
    """What the defender just sent leaves their chat later (``core.discreet.forget_later``),
    unless it is being deleted now (a PIN, a report) or is a location (a live one must keep
    updating the alert; discreet mode deletes it once over: ``core.live_locations``)."""
    message_id = event.inbound.chat_message_id
    if defender is None or not message_id or message_id in deleted or event.inbound.location:
        return
    seen = event.vault.blind_index(f"inbound:{event.inbound.channel}", event.inbound.message_id)
    await discreet.forget_later(
        event.session,
        event.vault,
        to,
        defender,
        message_id=message_id,
        key=f"in:{seen.hex()}",
        now=event.now,
    )


def merge(replies: list[Outbound], delete_ids: list[str]) -> Outbound:
    """One event, one message: fewer sends on a poor connection, and they cannot reorder."""
    choices = next((r.choices for r in reversed(replies) if r.choices), ())
    return Outbound(
        text="\n\n".join(r.text for r in replies if r.text),
        choices=choices,
        request_location=any(r.request_location for r in replies),
        sensitive=any(r.sensitive for r in replies),
        delete_message_ids=tuple(delete_ids),
    )


async def expire(session: AsyncSession, *, now: datetime) -> int:
    """Close abandoned conversations: their data is dropped; the next message hears why."""
    result = await session.execute(
        update(Conversation)
        .where(Conversation.expires_at <= now, Conversation.flow != IDLE)
        .values(
            flow=IDLE,
            state=EXPIRED,
            data_enc=None,
            expires_at=None,
            version=Conversation.version + 1,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def forget_seen(session: AsyncSession, *, now: datetime) -> None:
    await session.execute(delete(SeenInbound).where(SeenInbound.seen_at < now - SEEN_FOR))
