"""What the dispatcher writes after a send: delivered, retry later, or fall back.

A message that cannot be delivered, for good or within its patience, falls back to the
person's next address or another responder, or brings escalation forward (core.fallback).
An alarm that was being sent when its alert closed is withdrawn rather than tried again or
elsewhere (``overtaken``): the all-clear is already queued.

A message delivered to a defender that must not stay in their chat (discreet mode's sensitive
ones; on Telegram, every one) queues its own deletion in the same transaction; deletions are
retried on their own terms (core.discreet).

A message a channel sends in parts (Telegram: a long text's chunks, then files) can fail
partway: the ids of the parts already in the chat (``DeliveryError.sent``) are kept in the
row's payload (``Outbound.sent_parts``) in the transaction that records the failure, so the
retry, by any process, sends only the rest, and discreet mode deletes every part: all of them
once delivered, or those sent if the row ends undelivered. A fallback elsewhere sends it whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import discreet, outbox, withdrawals
from core.claims import locked, write_lock
from core.crypto import Vault
from core.fallback import alert_event, block, escalated, fallback, identity_changed
from core.messages import IDENTITY_CHANGED, WITHDRAWN, Outbound
from core.models import (
    Alert,
    AlertState,
    ChannelAddress,
    OutboxMessage,
    OutboxState,
    Priority,
    Webhook,
)

# A webhook row held because its endpoint is paused (not an attempt; ``core.dispatch``).
PAUSED = "paused"
MAX_ATTEMPTS = 12  # channel messages; then dead (visible, replayable)
# A P0/P1 alert notice is given up on by time, not by count: twelve tries at P0's 30 s cap
# are four minutes, shorter than a signal-cli restart or a provider outage.
ALERT_PATIENCE = timedelta(hours=24)
WEBHOOK_ATTEMPTS = 16  # about 3 to 6 hours with the one-hour cap and its jitter
CAP_S = {0: 30.0, 1: 120.0, 2: 600.0, 3: 600.0}
WEBHOOK_CAP_S = 3600.0
PATIENCE_S = {0: 60.0, 1: 300.0, 2: 900.0, 3: 3600.0}  # longer waits try another address


@dataclass(frozen=True)
class Attempt:
    row_id: uuid.UUID
    outcome: str  # "delivered", "retry", "permanent", "deferred" or "expired" (held too long)
    message: Outbound | None = None  # what was sent, for a fallback
    error: str | None = None  # a class of error, never content
    retry_after: float | None = None
    wait: float = 0.0  # deferred by a rate limit: not an attempt
    sent_id: str | None = None  # the channel's id(s) of what this try sent, comma-separated
    elapsed: float = 0.0  # seconds from the claim to the channel's answer
    parts: tuple[str, ...] = ()  # failed partway: the ids of the parts this try sent


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
    resumed = await resumed_meanwhile(session, [r for r in rows if by_id[r.id].error == PAUSED])
    await unblock(session, {r.address_id for r in rows if by_id[r.id].outcome == "delivered"})
    failed = [r for r in rows if by_id[r.id].outcome != "delivered"]
    # Overtaken alarms, and messages to a defender who deleted their data meanwhile
    # (core.defenders.withdraw_waiting marked them): withdrawn, not tried again.
    stale = await overtaken(session, failed) | {r.id for r in failed if r.last_error == WITHDRAWN}
    # Retries last: one waiting past its patience pages a stand-in only if no other notice
    # of its step reaches the desk, and one that failed for good in this batch does not.
    to_delete: list[discreet.Delivered] = []  # delivered rows whose messages go later
    for row in sorted(rows, key=lambda r: by_id[r.id].outcome == "retry"):
        attempt = by_id[row.id]
        row.lease_owner, row.lease_until = None, None
        # Not delivered, with parts of it in the chat: ``attempt.message`` is now whole again,
        # as a fallback sends it (elsewhere).
        partway, attempt = stopped(attempt)
        if row.id in stale and attempt.outcome in ("deferred", "retry"):
            if attempt.outcome == "retry":
                row.attempts += 1
            # as core.alert_handling.resolve would have, had it been waiting
            withdrawals.withdraw(row)
            await left_partway(session, vault, row, attempt.message, partway, now)
            continue
        if attempt.outcome == "deferred":
            wait = 0.0 if row.webhook_id in resumed else attempt.wait
            row.state, row.next_attempt_at = OutboxState.pending, now + seconds(wait)
            continue
        if attempt.outcome == "expired" and row.id in stale:
            withdrawals.withdraw(row)
            continue
        if attempt.outcome == "expired":  # payload kept: the desk may still replay it
            row.state, row.last_error = OutboxState.dead, attempt.error
            if row.alert_id is not None:
                detail = {
                    "outbox": str(row.id),
                    "recipient": row.recipient,
                    "channel": row.channel,
                }
                session.add(alert_event(row.alert_id, "delivery_dead", now, detail))
            continue
        row.attempts, row.last_error = row.attempts + 1, attempt.error
        if attempt.outcome == "delivered":
            row.state, row.delivered_at = OutboxState.delivered, now
            row.shred("payload_enc")
            message = attempt.message
            if message is not None and discreet.deleted_later(row, message):
                sent_id = every_part(message.sent_parts, attempt.sent_id)
                if sent_id:
                    to_delete.append((row, sent_id, message.sensitive))
        elif attempt.outcome == "permanent" and discreet.is_deletion(row):
            row.state = OutboxState.failed  # the chat is gone or blocked: nothing to delete
            row.shred("payload_enc")
            if attempt.error == discreet.NOT_DELETED:  # it stays on the defender's phone
                await discreet.not_deleted(session, row, now)
        elif attempt.outcome == "permanent":
            row.state = OutboxState.failed
            await block(session, row, now)
            if attempt.error == IDENTITY_CHANGED:
                await identity_changed(session, vault, row, now)
            if row.id not in stale:
                await fallback(session, vault, row, attempt.message, attempt.error, now, last=True)
            row.shred("payload_enc")
        else:
            if attempt.parts and attempt.message is not None:  # the retry sends the rest
                outbox.store(vault, row, replace(attempt.message, sent_parts=partway))
            # The wait counts from the channel's answer, not the claim: a 429's retry_after
            # after a slow send would otherwise be cut short by the send's own duration.
            await retry(session, vault, row, attempt, now + seconds(attempt.elapsed), rng)
        if partway and row.state in (OutboxState.failed, OutboxState.dead):
            await left_partway(session, vault, row, attempt.message, partway, now)
    await discreet.delete_all_later(session, vault, to_delete, now)


def stopped(attempt: Attempt) -> tuple[tuple[str, ...], Attempt]:
    """(the ids of the parts of a message not delivered that earlier tries and this one put
    in the chat, the attempt with its message whole again); ((), attempt) mostly."""
    message = attempt.message
    if attempt.outcome == "delivered" or message is None:
        return (), attempt
    if not (message.sent_parts or attempt.parts):
        return (), attempt
    whole = replace(message, sent_parts=())
    return (*message.sent_parts, *attempt.parts), replace(attempt, message=whole)


def every_part(earlier: tuple[str, ...], sent_id: str | None) -> str | None:
    """The ids of a delivered message's parts: earlier tries' and the last one's."""
    if not earlier:
        return sent_id
    return ",".join((*earlier, sent_id) if sent_id else earlier)


async def left_partway(
    session: AsyncSession,
    vault: Vault,
    row: OutboxMessage,
    message: Outbound | None,
    partway: tuple[str, ...],
    now: datetime,
) -> None:
    """``row`` will not be tried again, with some of its parts in the chat: those are deleted
    as the whole would have been (a fallback sends the message whole, elsewhere)."""
    if partway and message is not None and discreet.deleted_later(row, message):
        sent = ",".join(partway)
        await discreet.delete_later(session, vault, row, sent, now, sensitive=message.sensitive)


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
        and withdrawals.step_notice(r.idempotency_key)
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


async def resumed_meanwhile(
    session: AsyncSession, held: Sequence[OutboxMessage]
) -> set[uuid.UUID | None]:
    """Of the endpoints these rows were held for (claimed while it was paused), those resumed
    since: the resume brought forward the rows waiting, not these, being claimed (it found
    them ``sending``), so they go now, not after another PAUSED_WAIT_S. The endpoints are
    read ``FOR SHARE`` on PostgreSQL: a resume committing meanwhile is waited for and seen,
    and one after this transaction finds the rows waiting (``core.webhooks.resume`` marks its
    endpoint first)."""
    ids = {r.webhook_id for r in held if r.webhook_id is not None}
    if not ids:
        return set()
    # Every endpoint locked, the active ones kept here: a row filtered out in SQL (paused, as
    # this statement's snapshot has it) would be neither locked nor waited for.
    stmt = select(Webhook.id, Webhook.active).where(Webhook.id.in_(ids)).order_by(Webhook.id)
    found = await session.execute(locked(stmt, session, read=True))
    return {hook_id for hook_id, active in found if active}


async def unblock(session: AsyncSession, ids: set[uuid.UUID | None]) -> None:
    """Delivered to: reachable again (the person unblocked the bot); one statement a batch."""
    if wanted := ids - {None}:
        clear = ChannelAddress.id.in_(wanted), ChannelAddress.blocked_at.is_not(None)
        await session.execute(update(ChannelAddress).where(*clear).values(blocked_at=None))


async def retry(
    session: AsyncSession,
    vault: Vault,
    row: OutboxMessage,
    attempt: Attempt,
    now: datetime,
    rng: Callable[[], float],
) -> None:
    limit = WEBHOOK_ATTEMPTS if row.webhook_id is not None else MAX_ATTEMPTS
    if discreet.is_deletion(row):  # never falls back nor escalates: R12's limit instead
        wait = attempt.retry_after or backoff(row, rng)
        await discreet.retry(session, row, now, wait=wait, limit=limit)
        return
    if given_up(row, now):
        row.state = OutboxState.dead
        if row.alert_id is not None:
            detail = {"outbox": str(row.id), "recipient": row.recipient, "channel": row.channel}
            session.add(alert_event(row.alert_id, "delivery_dead", now, detail))
        # Nobody else will try this person for this step: unreachable, so the desk comes sooner.
        last = row.alert_id is not None
        await fallback(session, vault, row, attempt.message, "gave_up", now, last=last)
        if row.webhook_id is None:  # never sent again (only webhook events are replayed)
            row.shred("payload_enc")
        return
    if attempt.retry_after is not None:  # the channel said how long: honour it, never less
        wait = attempt.retry_after * (1 + 0.1 * rng())
        if row.webhook_id is not None:  # a receiver's "1" (429) must not spend its tries
            wait = max(wait, backoff(row, rng))  # in seconds: they are given up by count
            # nor its "864000" park the event unseen for days: at most the cap, so that a
            # receiver that keeps refusing ends in the dead letters the desk sees and replays
            wait = min(wait, WEBHOOK_CAP_S * (1 + 0.1 * rng()))
    else:
        wait = backoff(row, rng)
    patience = PATIENCE_S.get(row.priority, 3600.0)
    if wait > patience and row.webhook_id is None:
        # With nobody else to try, the alert escalates as for an unreachable person (another
        # responder paged, the desk step brought forward), once: the row itself keeps trying,
        # since such a wait passes (a Signal rate limit) and the address is not blocked.
        last = row.alert_id is not None and not await escalated(session, row)
        moved = await fallback(session, vault, row, attempt.message, "patience", now, last=last)
        # A responder stands in for the group meanwhile: the group's post (its buttons, its
        # code) still goes when the wait is over, as a person's would with nobody to try.
        if moved and row.recipient != "group":
            row.state = OutboxState.failed
            row.shred("payload_enc")
            return
    row.state, row.next_attempt_at = OutboxState.pending, now + seconds(wait)


def given_up(row: OutboxMessage, now: datetime) -> bool:
    """Webhooks and ordinary messages give up after so many tries; an alert's P0/P1 notices
    keep trying at their cap for ALERT_PATIENCE, so a channel that comes back still carries
    them (a resolved alert's pending notices are withdrawn: core.alert_handling.resolve)."""
    if row.webhook_id is not None:
        return row.attempts >= WEBHOOK_ATTEMPTS
    if row.alert_id is not None and row.priority <= Priority.P1:
        return now - row.created_at >= ALERT_PATIENCE
    return row.attempts >= MAX_ATTEMPTS
