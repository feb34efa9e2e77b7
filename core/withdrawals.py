"""Withdrawing an alert's alarms when it closes: a "may need help" must never arrive after
"they are safe", in the caller's transaction (a dispatcher's batch for ``behind_alarms``).

The ladder's notices waiting for a retry are withdrawn once the all-clear is queued
(``withdraw_steps``), and so are all-clears queued to contacts who asked to stop meanwhile
(``spare_stopped``); a dispatcher holds an all-clear back while its person's alarm is still
on its way (``behind_alarms``). Keys as written by ``core.actions``.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import outbox
from core.actions import key_person
from core.claims import locked
from core.messages import WITHDRAWN
from core.models import Alert, Consent, Defender, OutboxMessage, OutboxState, TrustedContact


async def spare_stopped(session: AsyncSession, alert: Alert) -> None:
    """The all-clears ``follow_ups.closing`` queued to contacts who asked to stop meanwhile are
    withdrawn (``core.contacts.stop``, PostgreSQL: ``closing`` may have read them before it
    committed).
    Their rows are read ``FOR SHARE``: a /stop that updated them first is waited for, and its
    ``revoked`` read here; a /stop after waits for this commit, then withdraws what it queued.
    One forgotten with the defender's data has no row: the defender's is locked instead
    (``FOR UPDATE``), which /stop's bare row for them (its foreign key) waits for, or is
    waited for. Only after ``withdraw_steps``: a /stop holds the alarms it withdrew while it
    waits for these rows, and ``withdraw_steps`` would wait for those (a deadlock)."""
    stmt = select(OutboxMessage.idempotency_key).where(
        OutboxMessage.alert_id == alert.id,
        OutboxMessage.recipient == "contact",
        OutboxMessage.state == OutboxState.pending,
        OutboxMessage.idempotency_key.like(f"a:{alert.id.hex}:closed%"),
    )
    queued: dict[uuid.UUID, list[str]] = {}
    for (k,) in (await session.execute(stmt)).all():
        person = key_person(k)
        if person is not None and person[0] == "contact":
            queued.setdefault(person[1], []).append(k)
    if not queued:
        return
    rows = select(TrustedContact.id, TrustedContact.consent).order_by(TrustedContact.id)
    read = locked(rows.where(TrustedContact.id.in_(queued)), session, read=True)
    found = dict((await session.execute(read)).all())
    if len(found) < len(queued):  # forgotten: wait for a /stop writing their bare row
        me = select(Defender.id).where(Defender.id == alert.defender_id)
        await session.execute(locked(me, session))
        found = dict((await session.execute(read)).all())
    stopped = [k for cid, ks in queued.items() if found.get(cid) is Consent.revoked for k in ks]
    if stopped:
        keys = OutboxMessage.idempotency_key.in_(stopped)
        await outbox.withdraw_waiting(session, OutboxMessage.alert_id == alert.id, keys)


async def withdraw_steps(session: AsyncSession, alert: Alert) -> None:
    """Withdraw the ladder's notices of a closing alert that failed and wait for a retry, once
    the all-clear is queued (to everyone they were meant for): a "may need help" must never
    arrive after "they are safe". So are those a rate limit held back (untried, their next
    attempt moved later than when they were queued): the all-clear, due at once, would go
    first. Notices waiting untried at their first time stay: they go before the all-clear,
    queued after them at the same priority. One being sent now is withdrawn if its send fails
    (``core.delivery.overtaken``). Webhook events are never withdrawn: an external desk gets
    them all.

    The rows are locked (on SQLite the caller holds the write lock: ``alerts.lock``): else a
    dispatcher could claim one between this read and the update, send it, and have it recorded
    as withdrawn. A claim holding one makes this wait, then find it ``sending``: the
    dispatcher's. A row ``sending`` is never waited for: its dispatcher, recording, may be
    waiting for the alert this transaction holds (``core.delivery.overtaken``)."""
    stmt = (
        select(OutboxMessage)
        .where(
            OutboxMessage.alert_id == alert.id,
            OutboxMessage.state == OutboxState.pending,
            (OutboxMessage.attempts > 0)
            | (OutboxMessage.next_attempt_at > OutboxMessage.created_at),
            OutboxMessage.webhook_id.is_(None),
        )
        .order_by(OutboxMessage.id)
    )
    for row in (await session.execute(locked(stmt, session))).scalars():
        if step_notice(row.idempotency_key):
            withdraw(row)


def step_notice(idempotency_key: str) -> bool:
    """A ladder step's notice (``a:<alert>:<step>:…``): an alarm, not an all-clear."""
    stem = idempotency_key.split("|", 1)[0].split(":")
    return len(stem) > 2 and stem[0] == "a" and stem[2].isdigit()


def all_clear(idempotency_key: str) -> bool:
    """An alert's all-clear (``a:<alert>:closed<version>:…``)."""
    stem = idempotency_key.split("|", 1)[0].split(":")
    return len(stem) > 2 and stem[0] == "a" and stem[2].startswith("closed")


async def behind_alarms(session: AsyncSession, rows: list[OutboxMessage]) -> set[uuid.UUID]:
    """The all-clears among ``rows`` (a dispatcher's batch) whose person still has an alarm
    of that alert waiting or being sent by another batch (another worker's: several share
    the queue), at the same address: they wait for it, else "they are safe" could arrive
    before "they may need help". Within one batch the per-person spacing keeps the order.
    A webhook's recipient is its endpoint (they have no address): an endpoint's
    ``alert.resolved`` waits for its own ``alert.triggered``, never for another endpoint's
    retries (one down or paused held a working case system's all-clear for up to an hour).
    Alarms withdrawn at the close (``withdraw_steps``) are not waited for."""
    clears = [r for r in rows if r.alert_id is not None and all_clear(r.idempotency_key)]
    if not clears:
        return set()
    mine = {r.id for r in rows}
    stmt = select(
        OutboxMessage.alert_id,
        OutboxMessage.address_id,
        OutboxMessage.webhook_id,
        OutboxMessage.idempotency_key,
    ).where(
        OutboxMessage.alert_id.in_({r.alert_id for r in clears}),
        OutboxMessage.state.in_((OutboxState.pending, OutboxState.sending)),
        OutboxMessage.id.not_in(mine),
    )
    waiting = {
        (alert_id, address_id, webhook_id)
        for alert_id, address_id, webhook_id, k in (await session.execute(stmt)).all()
        if step_notice(k)
    }
    return {r.id for r in clears if (r.alert_id, r.address_id, r.webhook_id) in waiting}


def withdraw(row: OutboxMessage) -> None:
    row.state, row.last_error = OutboxState.failed, WITHDRAWN
    row.shred("payload_enc")
