"""The desk's side of alerts: the queue, the timeline, assignment, sealed notes, reopening.

Every query takes the caller's organisation: an alert of another organisation is simply not
found. Acknowledge and resolve belong to the escalation engine (core.alerts).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Integer, bindparam, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import alerts, audit
from core.claims import locked, write_lock
from core.crypto import Vault, seal
from core.db import AnySelect, fetch_hot
from core.models import (
    Alert,
    AlertEvent,
    AlertKind,
    AlertNote,
    AlertState,
    Defender,
    Organisation,
    Responder,
)
from core.org_keys import current_version

OUTCOMES = ("safe", "false_alarm", "intervention", "other")
# A reopened alert's dedup key: "<its first key>.<reopenings>" (the first key has no ".").
REOPENED = "."
NOTE_KIND = "alert_note"


class DeskConflict(Exception):
    """The alert is not in a state that allows this (e.g. reopening an open alert)."""


@dataclass(frozen=True)
class Cursor:
    at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raises ValueError for anything this API did not hand out."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            at, _sep, row_id = raw.partition("|")
            cursor = cls(datetime.fromisoformat(at), uuid.UUID(row_id))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError("bad cursor") from exc
        if cursor.at.tzinfo is None:
            raise ValueError("bad cursor")
        return cursor


QUEUE_COLUMNS = (
    Alert.id,
    Alert.kind,
    Alert.priority,
    Alert.state,
    Alert.dedup_key,
    Alert.defender_id,
    Defender.handle,
    Alert.do_not_contact,
    Alert.step,
    Alert.triggered_at,
    Alert.acknowledged_at,
    Alert.acknowledged_by,
    Alert.assigned_to,
    Alert.resolved_at,
    Alert.outcome,
)
_ID, _AT = (tuple(c.key for c in QUEUE_COLUMNS).index(k) for k in ("id", "triggered_at"))


@cache
def _queue_query(state: bool, kind: bool, priority: bool, after: bool) -> AnySelect:
    """The queue's statement for one combination of filters, built once: building and keying
    a statement costs more than running it. Values come as bound parameters."""
    query = (
        select(*QUEUE_COLUMNS)
        .join(Defender, Defender.id == Alert.defender_id)
        .where(Alert.org_id == bindparam("org_id"))
    )
    if state:
        query = query.where(Alert.state == bindparam("state"))
    if kind:
        query = query.where(Alert.kind == bindparam("kind"))
    if priority:
        query = query.where(Alert.priority == bindparam("priority"))
    if after:  # a row value: the index's range starts there (an OR would scan from the top)
        after_at = bindparam("after_at", type_=Alert.triggered_at.type)
        after_id = bindparam("after_id", type_=Alert.id.type)
        query = query.where(tuple_(Alert.triggered_at, Alert.id) < tuple_(after_at, after_id))
    order = query.order_by(Alert.triggered_at.desc(), Alert.id.desc())
    page: AnySelect = order.limit(bindparam("limit", type_=Integer))
    return page


async def list_alerts(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    state: AlertState | None = None,
    kind: AlertKind | None = None,
    priority: int | None = None,
    after: Cursor | None = None,
    limit: int = 50,
) -> tuple[list[Sequence[Any]], Cursor | None]:
    """One page of the queue, newest first, and the cursor of the next page or None. The
    rows come as the driver returns them (core.db.fetch_raw), in QUEUE_COLUMNS' order."""
    query = _queue_query(state is not None, kind is not None, priority is not None, bool(after))
    params: dict[str, Any] = {"org_id": org_id, "limit": limit + 1}
    if state is not None:
        params["state"] = state
    if kind is not None:
        params["kind"] = kind
    if priority is not None:
        params["priority"] = priority
    if after is not None:
        params["after_at"], params["after_id"] = after.at, after.id
    # One statement, no ORM, no result typing; what was committed when it runs.
    rows = list(await fetch_hot(session, query, params))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    at = last[_AT]
    at = datetime.fromisoformat(at) if isinstance(at, str) else at  # SQLite: UTC as text
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return rows[:limit], Cursor(at, uuid.UUID(str(last[_ID])))


async def get_alert(session: AsyncSession, org_id: uuid.UUID, alert_id: uuid.UUID) -> Alert | None:
    query = select(Alert).where(Alert.id == alert_id, Alert.org_id == org_id)
    return (await session.execute(query)).scalar_one_or_none()


async def handles_not_to_contact(session: AsyncSession, org_id: uuid.UUID) -> set[str]:
    """The handles of the organisation's defenders with an open do-not-contact alert (duress,
    a hidden defender): a roll-call's page lists its answers by handle."""
    query = (
        select(Defender.handle)
        .join(Alert, Alert.defender_id == Defender.id)
        .where(Alert.org_id == org_id, Alert.open_key.is_not(None), Alert.do_not_contact.is_(True))
    )
    return set((await session.execute(query)).scalars())


async def open_by_dedup(session: AsyncSession, org_id: uuid.UUID, dedup_key: str) -> Alert | None:
    """The open alert an external desk knows by its dedup key, else the latest one, locked
    (nothing reopens it before the caller acts). Raises DeskConflict for a key the alert had
    before it was reopened: a late retry about it must not close the reopened alert."""
    await write_lock(session)
    query = (
        select(Alert)
        .where(Alert.org_id == org_id, Alert.dedup_key == dedup_key)
        .order_by(Alert.open_key.is_(None), Alert.triggered_at.desc())
        .limit(1)
    )
    alert = (await session.execute(locked(query, session))).scalar_one_or_none()
    if alert is None and await _reopened_since(session, org_id, dedup_key):
        raise DeskConflict("the alert was reopened since")
    return alert


def reopened_key(dedup_key: str) -> str:
    """A reopened alert's new dedup key: its own, with a count of its reopenings."""
    base, _sep, count = dedup_key.partition(REOPENED)
    return f"{base}{REOPENED}{int(count) + 1 if count.isdigit() else 1}"


async def _reopened_since(session: AsyncSession, org_id: uuid.UUID, dedup_key: str) -> bool:
    """Whether ``dedup_key`` is one an alert had before a reopening gave it a later one. An
    alert's key starts with its defender's id (core.alerts.own_key), which narrows the look."""
    base, _sep, count = dedup_key.partition(REOPENED)
    if count and not count.isdigit():
        return False
    try:
        defender_id = uuid.UUID(hex=base[:32])
    except ValueError:
        return False
    query = select(Alert.dedup_key).where(
        Alert.org_id == org_id,
        Alert.defender_id == defender_id,
        Alert.dedup_key.startswith(base + REOPENED, autoescape=True),
    )
    later = (key.partition(REOPENED)[2] for key in (await session.scalars(query)))
    return any(n.isdigit() and int(n) > int(count or 0) for n in later)


async def handle_of(session: AsyncSession, defender_id: uuid.UUID) -> str | None:
    return (
        await session.execute(select(Defender.handle).where(Defender.id == defender_id))
    ).scalar_one_or_none()


async def timeline(
    session: AsyncSession, alert_id: uuid.UUID
) -> tuple[list[AlertEvent], list[AlertNote]]:
    events = await session.execute(
        select(AlertEvent).where(AlertEvent.alert_id == alert_id).order_by(AlertEvent.id)
    )
    notes = await session.execute(
        select(AlertNote).where(AlertNote.alert_id == alert_id).order_by(AlertNote.created_at)
    )
    return list(events.scalars()), list(notes.scalars())


async def _event(
    session: AsyncSession, alert: Alert, kind: str, actor: str, now: datetime, **detail: Any
) -> None:
    session.add(AlertEvent(alert_id=alert.id, at=now, kind=kind, actor=actor, detail=detail))
    await session.flush()


async def assign(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    to: uuid.UUID | None,
    actor: str,
    now: datetime,
) -> bool:
    """Assign to an active responder of the alert's organisation (None unassigns). False when
    there is no such responder: the assignee is read under a lock (PostgreSQL: ``FOR KEY
    SHARE``, which the disabling's ``FOR UPDATE`` waits for, and waits for; SQLite: the
    writer's lock). Read before, a responder disabled meanwhile was assigned the alert."""
    if to is not None:
        await write_lock(session)
        stmt = select(Responder.id).where(
            Responder.id == to, Responder.org_id == alert.org_id, Responder.active.is_(True)
        )
        if (
            await session.execute(locked(stmt, session, key_share=True, read=True))
        ).first() is None:
            return False
    alert.assigned_to = to
    await _event(session, alert, "assigned", actor, now, to=None if to is None else str(to))
    await audit.record(
        session,
        vault,
        actor=actor,
        action="alert.assign",
        target=str(alert.id),
        org_id=alert.org_id,
        detail={"to": None if to is None else str(to)},
        now=now,
    )
    return True


async def add_note(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    org: Organisation,
    text: str,
    author_id: uuid.UUID | None,
    actor: str,
    now: datetime,
) -> AlertNote:
    """Seal the note to the organisation key at once; the server keeps only the sealed box,
    whose body is ``{"alert": <alert id>, "text": <the note>}``."""
    if org.public_key is None:
        raise DeskConflict("the organisation has no key")
    note = AlertNote(
        id=uuid.uuid4(),
        alert_id=alert.id,
        org_id=org.id,
        author_id=author_id,
        key_version=await current_version(session, org),
        created_at=now,
    )
    # The body names its alert: a note moved to another alert opens, but is refused there.
    body = {"alert": str(alert.id), "text": text}
    note.sealed = seal(org.public_key, org_id=org.id, record_id=note.id, kind=NOTE_KIND, body=body)
    session.add(note)
    await _event(session, alert, "note_added", actor, now, note=str(note.id))
    await audit.record(
        session,
        vault,
        actor=actor,
        action="alert.note",
        target=str(alert.id),
        org_id=org.id,
        detail={"note": str(note.id)},
        now=now,
    )
    return note


async def reopen(
    session: AsyncSession, vault: Vault, *, alert: Alert, actor: str, now: datetime
) -> None:
    """Put a resolved alert back in the queue; the engine escalates it from the desk step.
    It gets a new dedup key (reopened_key), which its next webhook events carry: the external
    desk's late retry of a "resolve" about it before, by the key it had, closes nothing."""
    if alert.state is not AlertState.resolved:
        raise DeskConflict("the alert is open")
    alert = await alerts.lock(session, alert)  # bumps the fence: a sweep's stale claim drops
    if alert.state is not AlertState.resolved:
        raise DeskConflict("the alert is open")
    try:
        async with session.begin_nested():  # a unique violation must not abort the transaction
            alert.state = AlertState.triggered
            alert.dedup_key = reopened_key(alert.dedup_key)
            alert.open_key = alerts.dedup_key(alert.defender_id, alert.kind)
            alert.resolved_at = alert.outcome = None
            alert.acknowledged_at = alert.acknowledged_by = None
            alert.next_step_at = now
            await session.flush()
    except IntegrityError:
        raise DeskConflict("another alert is open for the same defender and kind") from None
    await _event(session, alert, "reopened", actor, now)
    await audit.record(
        session,
        vault,
        actor=actor,
        action="alert.reopen",
        target=str(alert.id),
        org_id=alert.org_id,
        now=now,
    )
