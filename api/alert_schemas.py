"""What the desk API says about alerts: the queue rows, the detail, the requests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
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
