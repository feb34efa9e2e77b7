"""The bot's deletions from a defender's chat. A sensitive message delivered to a defender who
turned discreet mode on queues, in the same transaction, its own deletion (``del:<key>``),
due after the defender's delay (setting ``discreet_delay_s``, 10 minutes by default, always
before Telegram's 48-hour limit). On Telegram, whose chats keep everything unless someone
deletes it (Signal's chats have a disappearing-messages timer, one day by default), every
other message between the bot and a defender is deleted a day after it was sent
(``KEPT``): what the bot sent, once delivered, and what the defender sent, queued as it is
handled (``forget_later``; PINs and reports go at once, and a location is left for the desk
to follow). In discreet mode a live location the defender shares is deleted by the same rows
once it is over (``core.live_locations``).

A deletion never falls back, blocks or escalates anything. It is retried with its backoff
capped so that its last attempt comes before the limit (``LAST_DELETION``). R12's alarm: one
not done by 47 h after the message was sent (still failing, given up, or refused by the
channel as too old, ``NOT_DELETED``) is written on the defender's open alerts' timelines
(``delivery_dead``, reason ``not_deleted``) and logged for the operator (``not_deleted``); the
desk's list of defenders counts them for each defender, open alert or not
(``not_deleted_counts``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import outbox
from core.crypto import CryptoError, Vault
from core.defenders import settings
from core.messages import Outbound
from core.models import (
    Alert,
    AlertEvent,
    AlertState,
    ChannelAddress,
    Defender,
    DefenderStatus,
    OutboxMessage,
    OutboxState,
    Priority,
)

DELETION = "del:"  # the key prefix of discreet mode's delayed deletions
TELEGRAM = "telegram"  # the channel whose chats keep messages until someone deletes them
KEPT = timedelta(hours=24)  # there, as long as a message stays in a defender's chat (R12)
DEFENDER = "defender"  # an outbox row's recipient when it goes to the defender's own chat
DISCREET_DELAY_S = 600.0  # the default delay before the bot's sensitive messages go
MAX_DISCREET_DELAY_S = 47 * 3600.0  # Telegram refuses to delete messages older than 48 h
# From the message's delivery (its deletion row's creation): the desk is told of a deletion
# not done by DELETION_ALARM (R12), and no retry is scheduled after LAST_DELETION.
DELETION_ALARM = timedelta(hours=47)
LAST_DELETION = timedelta(hours=47, minutes=45)
# A channel's refusal to delete a message (Telegram: older than 48 h): it stays on the phone.
NOT_DELETED = "too old to delete"

log = logging.getLogger("amparo.delivery")


def is_deletion(row: OutboxMessage) -> bool:
    return row.idempotency_key.startswith(DELETION)


def deletion_key(key: str) -> str:
    """Derived from the deleted message's key: a repeated delivery queues one deletion."""
    derived = DELETION + key
    return derived if len(derived) <= 160 else DELETION + hashlib.sha256(key.encode()).hexdigest()


def discreet_delay(vault: Vault, defender: Defender) -> float:
    """The defender's chosen delay in seconds, within [0, 47 h]; the default if unreadable."""
    try:
        value = float(settings(vault, defender).get("discreet_delay_s", DISCREET_DELAY_S))
    except (CryptoError, TypeError, ValueError):
        value = DISCREET_DELAY_S
    if not math.isfinite(value):
        value = DISCREET_DELAY_S
    return min(max(0.0, value), MAX_DISCREET_DELAY_S)


def deleted_later(row: OutboxMessage, message: Outbound) -> bool:
    """Whether ``row``, once in the chat, may have to be deleted (``delete_later`` decides)."""
    return message.sensitive or (row.channel == TELEGRAM and row.recipient == DEFENDER)


async def delete_later(
    session: AsyncSession,
    vault: Vault,
    row: OutboxMessage,
    sent_id: str,
    now: datetime,
    *,
    sensitive: bool,
) -> None:
    """Queue the deletion of what ``row`` put in a defender's chat: after the defender's delay
    when sensitive and discreet mode is on, else a day later on Telegram."""
    await delete_all_later(session, vault, [(row, sent_id, sensitive)], now)


Delivered = tuple[OutboxMessage, str, bool]  # a row, the ids it put in the chat, sensitive


async def delete_all_later(
    session: AsyncSession, vault: Vault, done: list[Delivered], now: datetime
) -> None:
    """``delete_later`` for a batch of deliveries: one query for their chats and defenders,
    one insert for each delay (on Telegram every message to a defender has one)."""
    wanted = {row.address_id for row, _ids, _s in done if row.address_id is not None}
    if not wanted:
        return
    found = await session.execute(
        select(ChannelAddress, Defender)
        .join(Defender, Defender.id == ChannelAddress.defender_id)
        .where(ChannelAddress.id.in_(wanted))
    )
    chats = {address.id: (address, defender) for address, defender in found}
    items: dict[timedelta, list[outbox.Item]] = defaultdict(list)
    for row, sent_id, sensitive in done:
        if row.address_id not in chats:
            continue
        address, defender = chats[row.address_id]
        wait = delay(vault, defender, address.channel, sensitive=sensitive)
        ids = tuple(i for i in sent_id.split(",") if i)
        if wait is not None:
            key = deletion_key(row.idempotency_key)
            items[wait].append(_item(address, ids, key, row.recipient))
    for wait, batch in items.items():
        await outbox.enqueue_many(session, vault, batch, now=now, at=now + wait)


async def forget_later(
    session: AsyncSession,
    vault: Vault,
    address: ChannelAddress,
    defender: Defender,
    *,
    message_id: str,
    key: str,
    now: datetime,
) -> None:
    """Queue the deletion of a message the defender sent (``key``: the inbound's, unique):
    on Telegram, after the defender's delay in discreet mode, else a day later."""
    wait = delay(vault, defender, address.channel, sensitive=True)
    if wait is not None and address.channel == TELEGRAM:
        item = _item(address, (message_id,), deletion_key(key), DEFENDER)
        await outbox.enqueue_many(session, vault, [item], now=now, at=now + wait)


def delay(vault: Vault, defender: Defender, channel: str, *, sensitive: bool) -> timedelta | None:
    """How long a message stays in ``defender``'s chat before the bot deletes it (None:
    the bot does not delete it)."""
    if defender.status is DefenderStatus.hidden:  # R8: as after a real deletion, whose
        return None  # address is detached: nothing is deleted from that chat after the fact
    if defender.discreet and sensitive:
        return timedelta(seconds=discreet_delay(vault, defender))
    return KEPT if channel == TELEGRAM else None


def _item(
    address: ChannelAddress, ids: tuple[str, ...], key: str, recipient: str | None
) -> outbox.Item:
    """One deletion row's item. Queued ``now`` (when the message was sent: the 48-hour limit
    runs from its creation) and due after the delay; a key already queued is skipped."""
    message = Outbound(text="", delete_message_ids=ids)
    return outbox.Item(
        address.channel, int(Priority.P2), key, message, address_id=address.id, recipient=recipient
    )


async def not_deleted(session: AsyncSession, row: OutboxMessage, now: datetime) -> None:
    """R12's alarm: ``row`` (a discreet deletion) is not done by 47 h after the message was
    sent, or never will be. The desk reads it once on each of the defender's open alerts
    (``delivery_dead``, reason ``not_deleted``); the operator in the log."""
    log.warning("discreet deletion not done", extra={"outbox": str(row.id)})
    address = None if row.address_id is None else await session.get(ChannelAddress, row.address_id)
    if address is None or address.defender_id is None:
        return
    stmt = select(Alert.id).where(
        Alert.defender_id == address.defender_id, Alert.state != AlertState.resolved
    )
    open_ids = list((await session.execute(stmt.order_by(Alert.id))).scalars())
    told = select(AlertEvent.alert_id, AlertEvent.detail).where(
        AlertEvent.alert_id.in_(open_ids), AlertEvent.kind == "delivery_dead"
    )
    done = {a for a, d in (await session.execute(told)).all() if d.get("outbox") == str(row.id)}
    detail = {"outbox": str(row.id), "recipient": row.recipient, "channel": row.channel}
    detail["reason"] = "not_deleted"
    session.add_all(
        AlertEvent(alert_id=a, at=now, kind="delivery_dead", actor="engine", detail=dict(detail))
        for a in open_ids
        if a not in done
    )


async def not_deleted_counts(
    session: AsyncSession, defender_ids: list[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """How many messages discreet mode gave up deleting are still on each defender's phone,
    among the outbox rows kept (30 days, core.retention): R12's alarm for the desk, also when
    no alert of theirs is open to carry it. A chat gone or blocked (nothing left to delete)
    is not counted."""
    if not defender_ids:
        return {}
    gave_up = (OutboxMessage.state == OutboxState.dead) | (
        (OutboxMessage.state == OutboxState.failed) & (OutboxMessage.last_error == NOT_DELETED)
    )
    stmt = (
        select(ChannelAddress.defender_id, func.count())
        .join(OutboxMessage, OutboxMessage.address_id == ChannelAddress.id)
        .where(
            ChannelAddress.defender_id.in_(defender_ids),
            OutboxMessage.idempotency_key.startswith(DELETION, autoescape=True),
            gave_up,
        )
        .group_by(ChannelAddress.defender_id)
    )
    return {d: int(n) for d, n in (await session.execute(stmt)).all() if d is not None}


async def retry(
    session: AsyncSession, row: OutboxMessage, now: datetime, *, wait: float, limit: int
) -> None:
    """A deletion that failed: tried again after ``wait`` seconds, once more at the alarm's
    hour if still failing, and never after ``LAST_DELETION``; dropped after ``limit`` tries."""
    latest = row.created_at + LAST_DELETION
    if row.attempts >= limit or now >= latest:
        row.state = OutboxState.dead
        row.shred("payload_enc")
        await not_deleted(session, row, now)
        return
    then = now + timedelta(seconds=wait)
    alarm = row.created_at + DELETION_ALARM
    row.state, row.next_attempt_at = OutboxState.pending, min(then, latest)
    if now < alarm:
        row.next_attempt_at = min(row.next_attempt_at, alarm)
    else:
        await not_deleted(session, row, now)
