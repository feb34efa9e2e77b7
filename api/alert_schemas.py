"""What the desk API says about alerts: the queue rows, the detail, the requests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, Field, TypeAdapter
from sqlalchemy import Row
from typing_extensions import TypedDict

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
# AlertPage with plain dicts for items: the same JSON, without building a model per row.
_QueueRow = cast(Any, TypedDict)(
    "QueueRow", {name: f.annotation for name, f in AlertOut.model_fields.items()}
)
_QUEUE_PAGE: TypeAdapter[Any] = TypeAdapter(
    cast(Any, TypedDict)(
        "QueuePage", {"items": cast(Any, list)[_QueueRow], "next_cursor": str | None}
    )
)


def queue_page_json(rows: Sequence[Row[Any]], next_cursor: str | None) -> bytes:
    """An AlertPage as its model would serialise it, straight from the queue's rows (the
    desk's hot path). The rows are already typed by the database layer (UUIDs, aware
    datetimes, enums); tests compare the result with the model's own serialisation."""
    if rows and rows[0]._fields != ROW_FIELDS:
        raise RuntimeError("the queue's columns no longer match AlertOut")
    items = [dict(zip(QUEUE_FIELDS, row, strict=True)) for row in rows]
    return _QUEUE_PAGE.dump_json({"items": items, "next_cursor": next_cursor})
