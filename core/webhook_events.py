"""What a desk webhook's event says (core.webhooks sends it): the DESIGN.md body of an alert's
event and a filed report's (no plaintext report content, the location only sealed), the outbox
items that queue them, one per endpoint, and the sealed location taken out of those still held
once the alert forgets it (R25).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Collection, Container, Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.claims import locked
from core.crypto import Vault
from core.models import Alert, OutboxMessage, OutboxState, Priority, Report
from core.outbox import Item

EVENTS = (
    "alert.triggered",
    "alert.escalated",
    "alert.acknowledged",
    "alert.resolved",
    "report.filed",
    "rollcall.closed",
)
# A filed report is the defender's word to the desk, like a reply; an urgent one also raises
# an alert, whose own events go at that alert's priority.
REPORT_PRIORITY = Priority.P1


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def body(event_type: str, alert: Alert, *, handle: str, event_id: str) -> bytes:
    """The raw JSON body; no plaintext report content, the location only sealed."""
    if event_type not in EVENTS:
        raise ValueError(f"unknown webhook event {event_type}")
    sealed = alert.location_sealed
    data = {
        "event_id": event_id,
        "type": event_type,
        "dedup_key": alert.dedup_key,
        "org": str(alert.org_id),
        "alert": {
            "id": str(alert.id),
            "kind": str(alert.kind),
            "priority": f"P{alert.priority}",
            "state": str(alert.state),
            "step": alert.step,
            "defender": handle,
            "do_not_contact": alert.do_not_contact,
            "triggered_at": iso(alert.triggered_at),
            "acknowledged_at": iso(alert.acknowledged_at),
            "resolved_at": iso(alert.resolved_at),
            "outcome": alert.outcome,
            "location_sealed": None if sealed is None else base64.b64encode(sealed).decode(),
        },
    }
    return _dump(data)


def report_body(report: Report, *, handle: str, event_id: str) -> bytes:
    """The ``report.filed`` body: which report, when, by whom; ``alert`` is null. Nothing the
    defender wrote or chose: the narrative and the type of act are sealed in the report (the
    type of act also in the encrypted triage), for the desk to open with its own key."""
    data = {
        "event_id": event_id,
        "type": "report.filed",
        "dedup_key": f"report:{report.id}",
        "org": str(report.org_id),
        "alert": None,
        "report": {
            "id": str(report.id),
            "defender": handle,
            "filed_at": iso(report.created_at),
        },
    }
    return _dump(data)


def _dump(data: Mapping[str, object]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


TRIGGERED = "alert.triggered"


async def introduced(
    session: AsyncSession, alert_ids: Collection[uuid.UUID], *, given_up: bool = False
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """The (alert, endpoint) pairs an ``alert.triggered`` was queued for and not given up on,
    in one query: an open alert's outbox rows are all kept (core.retention). One given up
    (dead: the receiver was down for hours) told nothing, so the endpoint's next event about
    the alert announces it again; ``given_up``: count it as told all the same (the end of the
    alert: a replay of the dead event must not leave the desk's case open)."""
    if not alert_ids:
        return set()
    stmt = select(OutboxMessage.alert_id, OutboxMessage.webhook_id).where(
        OutboxMessage.alert_id.in_(list(alert_ids)),
        OutboxMessage.webhook_id.is_not(None),
        OutboxMessage.idempotency_key.like(f"%:{TRIGGERED}|webhook:%"),
    )
    if not given_up:
        stmt = stmt.where(OutboxMessage.state != OutboxState.dead)
    return {(a, h) for a, h in await session.execute(stmt) if a is not None and h is not None}


def event_items(
    alert: Alert,
    hooks: Iterable[uuid.UUID],
    *,
    handle: str,
    event_type: str,
    stem: str,
    known: Container[uuid.UUID] | None = None,
) -> list[Item]:
    """Outbox items for ``event_type`` to each of the organisation's ``hooks``.

    An external desk learns of an alert with ``alert.triggered`` first. ``known``: the
    endpoints that were told (``introduced``; None: all of them). Another one, added since
    (or whose ``alert.triggered`` was given up), gets ``alert.triggered`` in place of a later
    event (the body says where the alert stands), and nothing of the end of an alert it never
    heard of."""
    items = []
    for hook_id in hooks:
        kind = event_type
        if known is not None and hook_id not in known:
            if event_type == "alert.resolved":
                continue
            kind = TRIGGERED
        raw = body(kind, alert, handle=handle, event_id=uuid.uuid4().hex)
        key = f"{stem}:{kind}|webhook:{hook_id.hex}"
        item = Item("webhook", alert.priority, key, raw=raw, webhook_id=hook_id)
        items.append(replace(item, alert_id=alert.id, recipient="webhook"))
    return items


def report_items(report: Report, hooks: Iterable[uuid.UUID], *, handle: str) -> list[Item]:
    """Outbox items for ``report.filed`` to each of the organisation's ``hooks``; the key
    names the report, so filing it again queues nothing twice."""
    items = []
    for hook_id in hooks:
        raw = report_body(report, handle=handle, event_id=uuid.uuid4().hex)
        key = f"r:{report.id.hex}:report.filed|webhook:{hook_id.hex}"
        items.append(
            Item("webhook", REPORT_PRIORITY, key, raw=raw, webhook_id=hook_id, recipient="webhook")
        )
    return items


HELD = (OutboxState.pending, OutboxState.sending, OutboxState.failed, OutboxState.dead)


async def forget_location(session: AsyncSession, vault: Vault, alert_id: uuid.UUID) -> int:
    """Take the sealed location out of the alert's events still held (waiting, being sent, or
    given up and replayable for 30 days), as the alert itself forgets it when it ends (R25,
    ``core.retention``); a replay then sends the event without it. Returns the rows changed.

    Rows locked on PostgreSQL, skipping one locked now: a dispatcher recording it may be
    waiting for the alert this transaction holds (``core.withdrawals.withdraw_steps``); on SQLite
    the caller holds the write lock."""
    stmt = select(OutboxMessage).where(
        OutboxMessage.alert_id == alert_id,
        OutboxMessage.webhook_id.is_not(None),
        OutboxMessage.state.in_(HELD),
        OutboxMessage.payload_enc.is_not(None),
    )
    changed = 0
    for row in (await session.execute(locked(stmt, session, skip=True))).scalars():
        raw = row.get(vault, "payload_enc")
        data = {} if raw is None else json.loads(raw)
        event = data.get("alert")  # None in a report's event
        if event is not None and event.get("location_sealed") is not None:
            event["location_sealed"] = None
            row.put(vault, "payload_enc", _dump(data))
            changed += 1
    return changed
