"""Discreet mode's live locations: kept while they share, deleted once they no longer serve.

Deleting a live location's message stops its sharing, and with it the desk's updates of
where the defender is, so one a discreet defender shares is not deleted at once like a static
one (``flows.router``). Its deletion is queued with it instead, as one of core.discreet's
``del:`` outbox rows (durable: a restart loses nothing), due when its live period ends
(Telegram's ``live_period``, counted from the message's sending). It is brought forward to
now when the defender stops sharing (Telegram's last edit, without ``live_period``) or when
the desk resolves the alert it was shared for (``alert_closed``), whichever comes first; an
update that changes the period (the defender extended it) moves it, unless it was brought
forward already. An alert called off with the defender's PIN does not bring it forward: the
duress PIN leaves the alert on, and its live location sharing, and the phone must not show
which PIN it was (R8). Like the defender's other messages (a PIN, a static location) it goes
as soon as it is over, with no discreet delay. A sharing "until I stop it" (0x7FFFFFFF), or
any period past MAX_DISCREET_DELAY_S, is deleted then, stopping it: after Telegram's 48 hours
its message could never be deleted (R12).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import outbox, wakeup
from core.claims import locked
from core.crypto import Vault
from core.discreet import MAX_DISCREET_DELAY_S, deletion_key
from core.messages import Location, Outbound
from core.models import (
    AlertEvent,
    ChannelAddress,
    OutboxMessage,
    OutboxState,
    Priority,
)


def key(vault: Vault, address_id: uuid.UUID, message_id: str) -> str:
    """The deletion row's key: opaque, and the same for every update of the message."""
    index = vault.blind_index("live_location", f"{address_id}:{message_id}")
    return deletion_key("live:" + index.hex())


def ends(sent: datetime, period: int | None) -> datetime:
    """When a live location sent at ``sent`` stops updating, deleted by then (R12's bound)."""
    seconds = MAX_DISCREET_DELAY_S if period is None else min(period, MAX_DISCREET_DELAY_S)
    return sent + timedelta(seconds=max(0, seconds))


async def shared(
    session: AsyncSession,
    vault: Vault,
    *,
    to: ChannelAddress,
    message_id: str,
    where: Location,
    now: datetime,
) -> None:
    """A discreet defender's live location, or an update of it (``where.ended``: the last):
    its deletion queued, or moved to the period's new end, or to now once it has ended.
    Called after the flows, which may have locked the alert: the order ``alert_closed``
    takes (alert, then row), so the two never wait on each other."""
    row_key = key(vault, to.id, message_id)
    found = select(OutboxMessage.id).where(OutboxMessage.idempotency_key == row_key)
    if (row_id := (await session.execute(found)).scalar_one_or_none()) is None:
        row = await outbox.enqueue(
            session,
            vault,
            to=to,
            message=Outbound(text="", delete_message_ids=(message_id,)),
            priority=Priority.P2,
            key=row_key,
            now=now,
            recipient="defender",
        )
        if row is not None:
            # Its creation: when the message was sent (near enough), for the 48-hour limit.
            # An update with no row (discreet mode turned on while sharing) counts from itself.
            row.created_at = now
            row.next_attempt_at = now if where.ended else ends(now, where.live_period)
        return
    for row in await _waiting(session, [row_id], now):
        row.next_attempt_at = now if where.ended else ends(row.created_at, where.live_period)
        wakeup.touch(session, wakeup.OUTBOX)


async def alert_closed(
    session: AsyncSession,
    vault: Vault,
    *,
    alert_id: uuid.UUID,
    defender_id: uuid.UUID,
    now: datetime,
) -> None:
    """The alert is resolved: the live locations shared for it (``location_added`` events
    naming their message) are deleted now, as the desk no longer follows them; only those
    queued for deletion, a discreet defender's."""
    stmt = select(AlertEvent.detail).where(
        AlertEvent.alert_id == alert_id, AlertEvent.kind == "location_added"
    )
    details = (await session.execute(stmt)).scalars()
    messages = sorted({str(d["live_message"]) for d in details if d.get("live_message")})
    if not messages:
        return
    found = select(ChannelAddress.id).where(ChannelAddress.defender_id == defender_id)
    addresses = list((await session.execute(found)).scalars())
    keys = [key(vault, a, m) for a in addresses for m in messages]
    ids = select(OutboxMessage.id).where(OutboxMessage.idempotency_key.in_(keys))
    rows = await _waiting(session, list((await session.execute(ids)).scalars()), now)
    for row in rows:
        row.next_attempt_at = now
    if rows:
        wakeup.touch(session, wakeup.OUTBOX)


async def _waiting(
    session: AsyncSession, ids: list[uuid.UUID], now: datetime
) -> list[OutboxMessage]:
    """Those of the rows ``ids`` whose time may still move (not yet due, never tried),
    locked. One claimed for sending is not waited for: a dispatcher holding it may be
    waiting for the alert this transaction holds (core.delivery.overtaken)."""
    if not ids:
        return []
    stmt = select(OutboxMessage).where(
        OutboxMessage.id.in_(ids),
        OutboxMessage.state == OutboxState.pending,
        OutboxMessage.attempts == 0,
        OutboxMessage.next_attempt_at > now,
    )
    return list((await session.execute(locked(stmt, session))).scalars())
