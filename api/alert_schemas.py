"""What the desk API says about alerts: the queue rows, the detail, the requests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring as _quote
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
    actor: str | None = Field(
        description='Who: "defender" (from their own phone), "responder:<id>", "token:<id>" '
        '(an API token), "engine" (the escalation ladder) and the like'
    )
    detail: dict[str, Any]


class NoteOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    author_id: uuid.UUID | None = Field(
        description="The responder who wrote it; null for a note the defender wrote from their "
        "phone, or one an API token added: the timeline's note_added event whose detail.note "
        'is this note\'s id says who (its actor: "defender", "token:<id>")'
    )
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


def _uuid_json(value: Any) -> str:
    if value is None:
        return "null"
    if value.__class__ is str and len(value) == 32:  # SQLite's text, inlined
        v = value.lower()
        return f'"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}"'
    return f'"{_uuid(value)}"'


def _at_text(value: Any) -> str:
    if value is None:
        return "null"
    if value.__class__ is str and len(value) == 26 and value[10] == " ":  # as _at_json, inlined
        return f'"{value[:10]}T{value[11:19] if value.endswith(".000000") else value[11:]}Z"'
    return f'"{_at_json(value)}"'


_KINDS_JSON = {k: _quote(v) for k, v in _KINDS.items()}
_STATES_JSON = {k: _quote(v) for k, v in _STATES.items()}


def _item_json(r: Sequence[Any]) -> str:
    """One queue row as ``queue_item``'s dict serialised, written out in AlertOut's field
    order: every value but the three free texts (dedup key, handle, outcome) is JSON already
    (ids, enums, numbers, timestamps), and those go through the json module's C quoting,
    which escapes as pydantic does. A SQLite row, as SQLAlchemy writes it (ids as
    ``uuid.hex``, times as 26 characters), is written inline: a call per value cost a
    third of the page."""
    i, d, at = r[0], r[5], r[9]
    if i.__class__ is str and len(i) == 32 and len(d) == 32 and len(at) == 26:
        ident = f'"{i[:8]}-{i[8:12]}-{i[12:16]}-{i[16:20]}-{i[20:]}"'
        defender = f'"{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:]}"'
        triggered = f'"{at[:10]}T{at[11:19] if at.endswith(".000000") else at[11:]}Z"'
    else:
        ident, defender, triggered = _uuid_json(i), _uuid_json(d), _at_text(at)
    return (
        f'{{"id":{ident},"kind":{_KINDS_JSON[r[1]]},"priority":{r[2]:d},'
        f'"state":{_STATES_JSON[r[3]]},"dedup_key":{_quote(r[4])},"defender_id":{defender},'
        f'"defender_handle":{"null" if r[6] is None else _quote(r[6])},'
        f'"do_not_contact":{"true" if r[7] else "false"},"step":{r[8]:d},'
        f'"triggered_at":{triggered},"acknowledged_at":{_at_text(r[10])},'
        f'"acknowledged_by":{_uuid_json(r[11])},"assigned_to":{_uuid_json(r[12])},'
        f'"resolved_at":{_at_text(r[13])},"outcome":{"null" if r[14] is None else _quote(r[14])}}}'
    )


def queue_page_json(rows: Sequence[Sequence[Any]], next_cursor: str | None) -> bytes:
    """An AlertPage as its model would serialise it, byte for byte, straight from the driver's
    rows of the queue (the desk's hot path: core.db.fetch_raw): no schema is walked and no
    dict is built (a quarter less CPU than pydantic's ``to_json`` of ``queue_item``s, which
    was a fifth of a listing's). Tests compare the bytes with the model's own serialisation
    on both backends, free texts with quotes, controls and non-ASCII included."""
    items = ",".join(map(_item_json, rows))
    cursor = "null" if next_cursor is None else _quote(next_cursor)
    return f'{{"items":[{items}],"next_cursor":{cursor}}}'.encode()
