"""What the desk API says about alerts: the queue rows, the detail, the requests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_core import to_json
from sqlalchemy import Row

from core.models import Alert, AlertKind, AlertState

Outcome = Literal["safe", "false_alarm", "intervention", "other"]


class AlertOut(BaseModel):
    id: uuid.UUID
    kind: AlertKind
    priority: int
    state: AlertState
    dedup_key: str
    defender_id: uuid.UUID
    defender_handle: str | None
    do_not_contact: bool
    step: int
    triggered_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: uuid.UUID | None
    assigned_to: uuid.UUID | None
    resolved_at: datetime | None
    outcome: str | None


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class EventOut(BaseModel):
    at: datetime
    kind: str
    actor: str | None
    detail: dict[str, Any]


class NoteOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    author_id: uuid.UUID | None
    key_version: int
    sealed: str  # base64 sealed box: open it with the organisation key


class AlertDetail(AlertOut):
    location_sealed: str | None  # base64 sealed box: open it with the organisation key
    timeline: list[EventOut]
    notes: list[NoteOut]


class AssignIn(BaseModel):
    responder_id: uuid.UUID | None


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class ResolveIn(BaseModel):
    outcome: Outcome


def out(a: Alert | Row[Any], handle: str | None) -> AlertOut:
    return AlertOut(
        id=a.id,
        kind=a.kind,
        priority=a.priority,
        state=a.state,
        dedup_key=a.dedup_key,
        defender_id=a.defender_id,
        defender_handle=handle,
        do_not_contact=a.do_not_contact,
        step=a.step,
        triggered_at=a.triggered_at,
        acknowledged_at=a.acknowledged_at,
        acknowledged_by=a.acknowledged_by,
        assigned_to=a.assigned_to,
        resolved_at=a.resolved_at,
        outcome=a.outcome,
    )


QUEUE_FIELDS = tuple(AlertOut.model_fields)
# The queue rows' columns (core.desk_alerts.QUEUE_COLUMNS), in AlertOut's order.
ROW_FIELDS = tuple("handle" if f == "defender_handle" else f for f in QUEUE_FIELDS)
_KINDS = {k.name: k.value for k in AlertKind}  # non-native enums store the member's name
_STATES = {s.name: s.value for s in AlertState}


def _uuid(value: Any) -> str | None:
    """SQLite gives the 32 hex digits SQLAlchemy stored, asyncpg a UUID object."""
    if value is None:
        return None
    if value.__class__ is str and len(value) == 32:
        value = value.lower()
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def _at(value: Any) -> datetime | None:
    """SQLite gives UTC as text without a zone (core.models.base.UTCDateTime)."""
    if value is None:
        return None
    at: datetime = datetime.fromisoformat(value) if value.__class__ is str else value
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _at_json(value: Any) -> str | None:
    """A timestamp as the model writes it in JSON (UTC, ``Z``, six fraction digits or none).
    SQLite's text (``YYYY-MM-DD HH:MM:SS.ffffff``, as SQLAlchemy stores it) is rewritten, not
    parsed."""
    if value.__class__ is str and len(value) == 26 and value[10] == " ":
        if value.endswith(".000000"):
            return f"{value[:10]}T{value[11:19]}Z"
        return f"{value[:10]}T{value[11:]}Z"
    at = _at(value)
    return None if at is None else at.replace(tzinfo=None).isoformat() + "Z"


def queue_item(r: Sequence[Any], at: Callable[[Any], Any] = _at) -> dict[str, Any]:
    """One queue row (ROW_FIELDS' order) as AlertOut's fields; tests hold the two together.
    ``at`` turns the timestamps: datetimes by default, JSON's text for queue_page_json."""
    return {
        "id": _uuid(r[0]),
        "kind": _KINDS[r[1]],
        "priority": r[2],
        "state": _STATES[r[3]],
        "dedup_key": r[4],
        "defender_id": _uuid(r[5]),
        "defender_handle": r[6],
        "do_not_contact": bool(r[7]),  # SQLite's booleans are 0 and 1
        "step": r[8],
        "triggered_at": at(r[9]),
        "acknowledged_at": at(r[10]),
        "acknowledged_by": _uuid(r[11]),
        "assigned_to": _uuid(r[12]),
        "resolved_at": at(r[13]),
        "outcome": r[14],
    }


def queue_page_json(rows: Sequence[Sequence[Any]], next_cursor: str | None) -> bytes:
    """An AlertPage as its model would serialise it, straight from the driver's rows of the
    queue (the desk's hot path: core.db.fetch_raw): every value already JSON's own (text,
    numbers, booleans), so no schema is walked. Tests compare the result with the model's
    own serialisation on both backends."""
    items = [queue_item(row, _at_json) for row in rows]
    return to_json({"items": items, "next_cursor": next_cursor})
