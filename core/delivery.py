"""What the dispatcher writes after a send: delivered, retry later, or fall back.

A permanent failure (a blocked bot, an unregistered Signal user) or a wait longer than the
message's patience falls back to the person's next address, written on the alert's timeline.
A desk notice none of its responder's addresses can carry goes to another responder, once a
step (``another_responder``). When nobody else can be tried, escalation comes sooner rather
than silently waiting: an unreachable contact or defender brings the alert's desk step (or the
missed check-in) forward. An alarm that was being sent when its alert closed is withdrawn
rather than tried again or elsewhere (``overtaken``): the all-clear is already queued.

Discreet mode: a sensitive message delivered to a defender who turned discreet mode on queues,
in the same transaction, its own deletion (``del:<key>``), due after the defender's delay
(setting ``discreet_delay_s``, 10 minutes by default, always before Telegram's 48-hour limit).
A deletion never falls back, blocks or escalates anything. It is retried with its backoff
capped so that its last attempt comes before the limit (``LAST_DELETION``). R12's alarm: one
not done by 47 h after the message was sent (still failing, given up, or refused by the
channel as too old, ``NOT_DELETED``) is written on the defender's open alerts' timelines
(``delivery_dead``, reason ``not_deleted``) and logged for the operator (``not_deleted``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import actions, alerts, escalation, outbox, recipients, wakeup
from core.claims import locked, write_lock
from core.crypto import CryptoError, Vault
from core.defenders import settings
from core.messages import IDENTITY_CHANGED, Outbound
from core.models import (
    Alert,
    AlertEvent,
    AlertKind,
    AlertState,
    ChannelAddress,
    CheckIn,
    CheckInState,
    Defender,
    DefenderStatus,
    OutboxMessage,
    OutboxState,
    Priority,
)

MAX_ATTEMPTS = 12  # channel messages; then dead (visible, replayable)
# A P0/P1 alert notice is given up on by time, not by count: twelve tries at P0's 30 s cap
# are four minutes, shorter than a signal-cli restart or a provider outage.
ALERT_PATIENCE = timedelta(hours=24)
WEBHOOK_ATTEMPTS = 16  # about half a day with the one-hour cap
CAP_S = {0: 30.0, 1: 120.0, 2: 600.0, 3: 600.0}
WEBHOOK_CAP_S = 3600.0
PATIENCE_S = {0: 60.0, 1: 300.0, 2: 900.0, 3: 3600.0}  # longer waits try another address
DELETION = "del:"  # the key prefix of discreet mode's delayed deletions
DISCREET_DELAY_S = 600.0  # the default delay before the bot's sensitive messages go
MAX_DISCREET_DELAY_S = 47 * 3600.0  # Telegram refuses to delete messages older than 48 h
# From the message's delivery (its deletion row's creation): the desk is told of a deletion
# not done by DELETION_ALARM (R12), and no retry is scheduled after LAST_DELETION.
DELETION_ALARM = timedelta(hours=47)
LAST_DELETION = timedelta(hours=47, minutes=45)
# A channel's refusal to delete a message (Telegram: older than 48 h): it stays on the phone.
NOT_DELETED = "too old to delete"

log = logging.getLogger("amparo.delivery")


@dataclass(frozen=True)
class Attempt:
    row_id: uuid.UUID
    outcome: str  # "delivered", "retry", "permanent", "deferred" or "expired" (held too long)
    message: Outbound | None = None  # what was sent, for a fallback
    error: str | None = None  # a class of error, never content
    retry_after: float | None = None
    wait: float = 0.0  # deferred by a rate limit: not an attempt
    sent_id: str | None = None  # the channel's id(s) of what was delivered, comma-separated
    elapsed: float = 0.0  # seconds from the claim to the channel's answer


def backoff(row: OutboxMessage, rng: Callable[[], float]) -> float:
    """Exponential with "equal jitter": between half and all of min(cap, 2 s * 2^(n-1))."""
    cap = WEBHOOK_CAP_S if row.webhook_id is not None else CAP_S.get(row.priority, 600.0)
    ceiling: float = min(cap, 2.0 * 2.0 ** min(30, max(0, row.attempts - 1)))
    return ceiling * (0.5 + rng() / 2)


async def record(
    session: AsyncSession,
    vault: Vault,
    attempts: list[Attempt],
    *,
    owner: str,
    now: datetime,
    rng: Callable[[], float],
) -> None:
    by_id = {a.row_id: a for a in attempts}
    await write_lock(session)
    stmt = select(OutboxMessage).where(
        OutboxMessage.id.in_(list(by_id)),
        OutboxMessage.lease_owner == owner,
        OutboxMessage.state == OutboxState.sending,
    )
    rows = (await session.execute(locked(stmt, session))).scalars().all()
    await unblock(session, {r.address_id for r in rows if by_id[r.id].outcome == "delivered"})
    stale = await overtaken(session, [r for r in rows if by_id[r.id].outcome != "delivered"])
    for row in rows:
        attempt = by_id[row.id]
        row.lease_owner, row.lease_until = None, None
        if row.id in stale and attempt.outcome in ("deferred", "retry"):
            if attempt.outcome == "retry":
                row.attempts += 1
            actions.withdraw(row)  # as core.alerts.resolve would have, had it been waiting
            continue
        if attempt.outcome == "deferred":
            row.state, row.next_attempt_at = OutboxState.pending, now + seconds(attempt.wait)
            continue
        if attempt.outcome == "expired":  # payload kept: the desk may still replay it
            row.state, row.last_error = OutboxState.dead, attempt.error
            if row.alert_id is not None:
                detail = {
                    "outbox": str(row.id),
                    "recipient": row.recipient,
                    "channel": row.channel,
                }
                session.add(_event(row.alert_id, "delivery_dead", now, detail))
            continue
        row.attempts, row.last_error = row.attempts + 1, attempt.error
        if attempt.outcome == "delivered":
            row.state, row.delivered_at = OutboxState.delivered, now
            row.shred("payload_enc")
            message = attempt.message
            if message is not None and message.sensitive and attempt.sent_id:
                await delete_later(session, vault, row, attempt.sent_id, now)
        elif attempt.outcome == "permanent" and is_deletion(row):
            row.state = OutboxState.failed  # the chat is gone or blocked: nothing to delete
            row.shred("payload_enc")
            if attempt.error == NOT_DELETED:  # the message stays on the defender's phone
                await not_deleted(session, row, now)
        elif attempt.outcome == "permanent":
            row.state = OutboxState.failed
            await block(session, row, now)
            if attempt.error == IDENTITY_CHANGED:
                await identity_changed(session, vault, row, now)
            if row.id not in stale:
                await fallback(session, vault, row, attempt.message, attempt.error, now, last=True)
            row.shred("payload_enc")
        else:
            # The wait counts from the channel's answer, not the claim: a 429's retry_after
            # after a slow send would otherwise be cut short by the send's own duration.
            await retry(session, vault, row, attempt, now + seconds(attempt.elapsed), rng)


async def overtaken(session: AsyncSession, rows: list[OutboxMessage]) -> set[uuid.UUID]:
    """The alarms among ``rows`` (a ladder step's notices) whose alert was closed while they
    were being sent: the all-clear is queued, so they must never be retried nor sent
    elsewhere ("may need help" after "they are safe"). The alerts are locked: a check-in
    closing one now waits, then withdraws what this transaction puts back in the queue."""
    alarms = [
        r
        for r in rows
        if r.alert_id is not None
        and r.webhook_id is None
        and actions.step_notice(r.idempotency_key)
    ]
    if not alarms:
        return set()
    ids = sorted({r.alert_id for r in alarms if r.alert_id is not None})
    stmt = select(Alert.id, Alert.state).where(Alert.id.in_(ids)).order_by(Alert.id)
    found = (await session.execute(locked(stmt, session, of=Alert))).all()
    still = {alert_id for alert_id, state in found if state is not AlertState.resolved}
    return {r.id for r in alarms if r.alert_id not in still}


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


async def unblock(session: AsyncSession, ids: set[uuid.UUID | None]) -> None:
    """Delivered to: reachable again (the person unblocked the bot); one statement a batch."""
    if wanted := ids - {None}:
        clear = ChannelAddress.id.in_(wanted), ChannelAddress.blocked_at.is_not(None)
        await session.execute(update(ChannelAddress).where(*clear).values(blocked_at=None))


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


async def delete_later(
    session: AsyncSession, vault: Vault, row: OutboxMessage, sent_id: str, now: datetime
) -> None:
    """Discreet mode: queue the deletion of what ``row`` put in a discreet defender's chat."""
    address = None if row.address_id is None else await session.get(ChannelAddress, row.address_id)
    if address is None or address.defender_id is None:
        return
    defender = await session.get(Defender, address.defender_id)
    if defender is None or not defender.discreet:
        return
    ids = tuple(i for i in sent_id.split(",") if i)
    queued = await outbox.enqueue(
        session,
        vault,
        to=address,
        message=Outbound(text="", delete_message_ids=ids),
        priority=Priority.P2,
        key=deletion_key(row.idempotency_key),
        now=now,
        recipient=row.recipient,
    )
    if queued is not None:  # its creation: when the message was sent, for the 48-hour limit
        queued.created_at = now
        queued.next_attempt_at = now + seconds(discreet_delay(vault, defender))


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
    for alert_id in open_ids:
        if alert_id not in done:
            session.add(_event(alert_id, "delivery_dead", now, detail))


async def retry(
    session: AsyncSession,
    vault: Vault,
    row: OutboxMessage,
    attempt: Attempt,
    now: datetime,
    rng: Callable[[], float],
) -> None:
    limit = WEBHOOK_ATTEMPTS if row.webhook_id is not None else MAX_ATTEMPTS
    if is_deletion(row):  # never falls back nor escalates: retried, then dropped (R12 alarm)
        latest = row.created_at + LAST_DELETION
        if row.attempts >= limit or now >= latest:
            row.state = OutboxState.dead
            row.shred("payload_enc")
            await not_deleted(session, row, now)
            return
        then = now + seconds(attempt.retry_after or backoff(row, rng))
        # Tried once more at the alarm's hour if still failing, and never after ``latest``.
        alarm = row.created_at + DELETION_ALARM
        row.state, row.next_attempt_at = OutboxState.pending, min(then, latest)
        if now < alarm:
            row.next_attempt_at = min(row.next_attempt_at, alarm)
        else:
            await not_deleted(session, row, now)
        return
    if given_up(row, now):
        row.state = OutboxState.dead
        if row.alert_id is not None:
            detail = {"outbox": str(row.id), "recipient": row.recipient, "channel": row.channel}
            session.add(_event(row.alert_id, "delivery_dead", now, detail))
        # Nobody else will try this person for this step: unreachable, so the desk comes sooner.
        last = row.alert_id is not None
        await fallback(session, vault, row, attempt.message, "gave_up", now, last=last)
        return
    if attempt.retry_after is not None:  # the channel said how long: honour it, never less
        wait = attempt.retry_after * (1 + 0.1 * rng())
    else:
        wait = backoff(row, rng)
    patience = PATIENCE_S.get(row.priority, 3600.0)
    if wait > patience and row.webhook_id is None:
        if await fallback(session, vault, row, attempt.message, "patience", now, last=False):
            row.state = OutboxState.failed
            row.shred("payload_enc")
            return
    row.state, row.next_attempt_at = OutboxState.pending, now + seconds(wait)


def given_up(row: OutboxMessage, now: datetime) -> bool:
    """Webhooks and ordinary messages give up after so many tries; an alert's P0/P1 notices
    keep trying at their cap for ALERT_PATIENCE, so a channel that comes back still carries
    them (a resolved alert's pending notices are withdrawn: core.alerts.resolve)."""
    if row.webhook_id is not None:
        return row.attempts >= WEBHOOK_ATTEMPTS
    if row.alert_id is not None and row.priority <= Priority.P1:
        return now - row.created_at >= ALERT_PATIENCE
    return row.attempts >= MAX_ATTEMPTS


async def block(session: AsyncSession, row: OutboxMessage, now: datetime) -> None:
    if row.address_id is not None:
        address = await session.get(ChannelAddress, row.address_id)
        if address is not None:
            address.blocked_at = now


async def identity_changed(
    session: AsyncSession, vault: Vault, row: OutboxMessage, now: datetime
) -> None:
    """R6: a defender's safety number changed. A new phone, or their number re-registered by
    whoever holds their SIM: the desk is alerted (flagged do-not-contact) to verify it is
    them another way before the new key is trusted (signal-cli's identities API)."""
    address = None if row.address_id is None else await session.get(ChannelAddress, row.address_id)
    if address is None or address.defender_id is None:
        return
    defender = await session.get(Defender, address.defender_id)
    if defender is not None and defender.status is not DefenderStatus.deleted:
        await alerts.raise_alert(
            session, vault, defender=defender, kind=AlertKind.identity_changed, now=now
        )


def _event(
    alert_id: uuid.UUID, kind: str, now: datetime, detail: Mapping[str, object]
) -> AlertEvent:
    return AlertEvent(alert_id=alert_id, at=now, kind=kind, actor="engine", detail=dict(detail))


async def fallback(
    session: AsyncSession,
    vault: Vault,
    row: OutboxMessage,
    message: Outbound | None,
    reason: str | None,
    now: datetime,
    *,
    last: bool,
) -> bool:
    """Queue ``message`` to the person's next untried address; True if there was one. With
    ``last`` (nothing more will be tried for this row) an unreachable person escalates."""
    address = None if row.address_id is None else await session.get(ChannelAddress, row.address_id)
    stem = row.idempotency_key.split("|", 1)[0]
    if address is None or message is None:
        others: list[ChannelAddress] = []
    else:
        sparing = await spared(session, row)
        others = await recipients.alternatives(session, address, sparing=sparing)
    for other in others:  # an address already tried for this message has its key queued
        assert message is not None
        key = f"{stem}|{other.channel}:{other.id.hex}"
        queued = await outbox.enqueue(
            session,
            vault,
            to=other,
            message=message,
            priority=Priority(row.priority),
            key=key,
            now=now,
            alert_id=row.alert_id,
            recipient=row.recipient,
        )
        if queued is None:
            continue
        if row.alert_id is not None:
            detail = {"outbox": str(row.id), "from": row.channel, "to": other.channel}
            detail["reason"] = str(reason)
            session.add(_event(row.alert_id, "delivery_fallback", now, detail))
        return True
    if last and await another_responder(session, vault, row, message, reason, now):
        return True
    if last:
        await unreachable(session, row, now)
    return False


async def spared(session: AsyncSession, row: OutboxMessage) -> uuid.UUID | None:
    """The defender under duress none of whose chats a desk notice may fall back to (one that
    is also a responder's would put "do not contact the device" on the device)."""
    if row.alert_id is None or row.recipient != "responder":
        return None
    alert = await session.get(Alert, row.alert_id)
    return alert.defender_id if alert is not None and alert.do_not_contact else None


async def another_responder(
    session: AsyncSession,
    vault: Vault,
    row: OutboxMessage,
    message: Outbound | None,
    reason: str | None,
    now: datetime,
) -> bool:
    """A ladder step's desk notice its responder cannot get on any address goes to another
    responder (R27: a blocked bot escalates); True if someone was left to page."""
    if row.recipient != "responder" or row.alert_id is None or message is None:
        return False
    if not actions.step_notice(row.idempotency_key):  # an all-clear: only for who was alerted
        return False
    alert = await session.get(Alert, row.alert_id, populate_existing=True)
    if alert is None or alert.state is AlertState.resolved:
        return False
    stem = row.idempotency_key.split("|", 1)[0].rsplit(":", 2)[0]  # a:<alert>:<step>
    page = actions.page_instead
    who = await page(session, vault, alert=alert, stem=stem, message=message, now=now)
    if who is None:
        return False
    detail = {"outbox": str(row.id), "from": row.channel, "to": who.channel}
    detail.update(reason=str(reason), recipient=who.role)
    session.add(_event(alert.id, "delivery_fallback", now, detail))
    return True


async def unreachable(session: AsyncSession, row: OutboxMessage, now: datetime) -> None:
    if row.alert_id is not None:
        detail = {"outbox": str(row.id), "recipient": row.recipient}
        session.add(_event(row.alert_id, "recipient_unreachable", now, detail))
        if row.recipient in ("contact", "defender"):
            await desk_sooner(session, row.alert_id, now)
    elif row.recipient == "defender" and row.idempotency_key.startswith("c:"):
        await miss_sooner(session, uuid.UUID(hex=row.idempotency_key.split(":")[1]), now)


async def desk_sooner(session: AsyncSession, alert_id: uuid.UUID, now: datetime) -> None:
    stmt = select(Alert).where(Alert.id == alert_id).execution_options(populate_existing=True)
    alert = (await session.execute(locked(stmt, session))).scalar_one_or_none()
    if alert is None or alert.state is not AlertState.triggered:
        return
    if escalation.desk_told(alert.kind, alert.step) or alert.next_step_at is None:
        return
    if alert.next_step_at > now:
        alert.next_step_at, alert.version = now, alert.version + 1
        alert.lease_owner, alert.lease_until = None, None
        session.add(actions.event(alert, "desk_brought_forward", now))
        wakeup.touch(session, wakeup.TIMERS, now)


async def miss_sooner(session: AsyncSession, checkin_id: uuid.UUID, now: datetime) -> None:
    """The defender cannot get their reminder: the grace they cannot use is cut short."""
    stmt = (
        select(CheckIn).where(CheckIn.id == checkin_id).execution_options(populate_existing=True)
    )
    row = (await session.execute(locked(stmt, session))).scalar_one_or_none()
    if row is None or row.state is not CheckInState.reminded or row.next_action_at <= now:
        return
    # Only this occurrence is missed sooner: the routine's grace (grace_s) stays as it is.
    row.next_action_at, row.version = now, row.version + 1
    row.lease_owner, row.lease_until = None, None
    wakeup.touch(session, wakeup.TIMERS, now)
