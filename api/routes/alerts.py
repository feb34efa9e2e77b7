"""Alerts: the queue, one alert's timeline, and what responders do with it."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api import errors
from api.alert_schemas import (
    AlertDetail,
    AlertOut,
    AlertPage,
    AssignIn,
    EventOut,
    NoteIn,
    NoteOut,
    ResolveIn,
    out,
    queue_page_json,
)
from api.deps import AlertsRead, AlertsWrite, NowDep, SessionDep, VaultDep
from api.errors import N_, ApiError
from api.queue_route import QueueRoute
from core import alert_handling, audit, desk_alerts
from core.auth import Principal
from core.desk_alerts import Cursor, DeskConflict
from core.models import Alert, AlertKind, AlertState, Organisation

router = APIRouter(prefix="/alerts", tags=["alerts"])

BAD_CURSOR = N_("this page cursor is not valid")
NOT_OPEN = N_("the alert is not open")
ALREADY_OPEN = N_("the alert is already open, or another is open for the same defender")
NO_KEY = N_("upload an organisation key first")


async def list_alerts(
    principal: AlertsRead,
    session: SessionDep,
    state: AlertState | None = None,
    kind: AlertKind | None = None,
    priority: Annotated[int | None, Query(ge=0, le=3)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The alert queue, newest first; filter by state, kind and priority."""
    try:
        after = None if cursor is None else Cursor.decode(cursor)
    except ValueError:
        raise ApiError(422, BAD_CURSOR) from None
    rows, following = await desk_alerts.list_alerts(
        session,
        org_id=principal.org_id,
        state=state,
        kind=kind,
        priority=priority,
        after=after,
        limit=limit,
    )
    # Serialised here, once, straight from the driver's rows: the hot path of the desk.
    body = queue_page_json(rows, None if following is None else following.encode())
    return Response(body, media_type="application/json")


# The queue's plain request skips the dependencies above (api.queue_route); the rest is this.
router.add_api_route(
    "",
    list_alerts,
    methods=["GET"],
    response_model=AlertPage,
    responses={422: {}},
    route_class_override=QueueRoute,
)


async def _alert(session: AsyncSession, principal: Principal, alert_id: uuid.UUID) -> Alert:
    alert = await desk_alerts.get_alert(session, principal.org_id, alert_id)
    if alert is None:
        raise ApiError(404, errors.NOT_FOUND)
    return alert


async def _detail(session: AsyncSession, alert: Alert) -> AlertDetail:
    events, notes = await desk_alerts.timeline(session, alert.id)
    base = out(alert, await desk_alerts.handle_of(session, alert.defender_id))
    return AlertDetail(
        **base.model_dump(),
        location_sealed=None
        if alert.location_sealed is None
        else base64.b64encode(alert.location_sealed).decode(),
        timeline=[EventOut(at=e.at, kind=e.kind, actor=e.actor, detail=e.detail) for e in events],
        notes=[
            NoteOut(
                id=n.id,
                created_at=n.created_at,
                author_id=n.author_id,
                key_version=n.key_version,
                sealed=base64.b64encode(n.sealed).decode(),
            )
            for n in notes
        ],
    )


@router.get("/{alert_id}", responses={404: {}})
async def get_alert(
    alert_id: uuid.UUID, principal: AlertsRead, session: SessionDep, vault: VaultDep, now: NowDep
) -> AlertDetail:
    """One alert with its timeline and its sealed notes."""
    alert = await _alert(session, principal, alert_id)
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="alert.view",
        target=str(alert.id),
        org_id=principal.org_id,
        now=now,
    )
    return await _detail(session, alert)


def _open(alert: Alert) -> None:
    """ApiError 409 for a resolved alert."""
    if alert.state is AlertState.resolved:
        raise ApiError(409, NOT_OPEN)


async def acknowledge_alert(
    session: AsyncSession, vault: VaultDep, principal: Principal, alert: Alert, now: datetime
) -> AlertOut:
    _open(alert)
    via = "api" if principal.responder_id is None else "desk"
    if not await alert_handling.acknowledge(
        session,
        vault,
        alert=alert,
        responder_id=principal.responder_id,
        now=now,
        via=via,
        actor=principal.actor,  # "token:<id>": which integration, as resolve and notes say
    ):  # already acknowledged (a retry, a colleague first): answered as done, not audited
        _open(alert)  # read again under the engine's lock: resolved meanwhile, not open
        return out(alert, await desk_alerts.handle_of(session, alert.defender_id))
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="alert.acknowledge",
        target=str(alert.id),
        org_id=principal.org_id,
        now=now,
    )
    return out(alert, await desk_alerts.handle_of(session, alert.defender_id))


async def resolve_alert(
    session: AsyncSession,
    vault: VaultDep,
    principal: Principal,
    alert: Alert,
    outcome: str,
    now: datetime,
) -> AlertOut:
    _open(alert)
    if not await alert_handling.resolve(
        session, vault, alert=alert, outcome=outcome, actor=principal.actor, now=now
    ):  # resolved meanwhile (a colleague, the external desk first): not this one's resolve
        raise ApiError(409, NOT_OPEN)
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="alert.resolve",
        target=str(alert.id),
        org_id=principal.org_id,
        detail={"outcome": outcome},
        now=now,
    )
    return out(alert, await desk_alerts.handle_of(session, alert.defender_id))


@router.post("/{alert_id}/acknowledge", responses={404: {}, 409: {}})
async def acknowledge(
    alert_id: uuid.UUID, principal: AlertsWrite, session: SessionDep, vault: VaultDep, now: NowDep
) -> AlertOut:
    """Acknowledge: I've got it. Stops the desk repeats until the ack timeout."""
    return await acknowledge_alert(
        session, vault, principal, await _alert(session, principal, alert_id), now
    )


@router.post("/{alert_id}/resolve", responses={404: {}, 409: {}})
async def resolve(
    alert_id: uuid.UUID,
    body: ResolveIn,
    principal: AlertsWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> AlertOut:
    """Resolve with an outcome: safe, false_alarm, intervention or other."""
    alert = await _alert(session, principal, alert_id)
    return await resolve_alert(session, vault, principal, alert, body.outcome, now)


@router.post("/{alert_id}/assign", responses={404: {}})
async def assign(
    alert_id: uuid.UUID,
    body: AssignIn,
    principal: AlertsWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> AlertOut:
    """Assign the alert to a responder of the organisation (null unassigns)."""
    alert = await _alert(session, principal, alert_id)
    if not await desk_alerts.assign(
        session, vault, alert=alert, to=body.responder_id, actor=principal.actor, now=now
    ):
        raise ApiError(404, errors.NOT_FOUND)
    return out(alert, await desk_alerts.handle_of(session, alert.defender_id))


@router.post("/{alert_id}/notes", status_code=201, responses={404: {}, 409: {}})
async def add_note(
    alert_id: uuid.UUID,
    body: NoteIn,
    principal: AlertsWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> NoteOut:
    """Add a note; it is sealed to the organisation key on arrival and never kept in clear.
    Opened, it reads ``{"org", "record": <note id>, "kind": "alert_note", "body": {"alert":
    <alert id>, "text"}}``: check all three ids, so a note moved to another alert is refused."""
    alert = await _alert(session, principal, alert_id)
    org = await session.get(Organisation, principal.org_id)
    assert org is not None
    try:
        note = await desk_alerts.add_note(
            session,
            vault,
            alert=alert,
            org=org,
            text=body.text,
            author_id=principal.responder_id,
            actor=principal.actor,
            now=now,
        )
    except DeskConflict:
        raise ApiError(409, NO_KEY) from None
    return NoteOut(
        id=note.id,
        created_at=note.created_at,
        author_id=note.author_id,
        key_version=note.key_version,
        sealed=base64.b64encode(note.sealed).decode(),
    )


@router.post("/{alert_id}/keep-open", responses={404: {}, 409: {}})
async def keep_open(
    alert_id: uuid.UUID, principal: AlertsWrite, session: SessionDep, vault: VaultDep, now: NowDep
) -> AlertOut:
    """Keep the alert open after a check-in, until proof of life is verified."""
    alert = await _alert(session, principal, alert_id)
    _open(alert)
    if not await alert_handling.keep_open(session, alert=alert, actor=principal.actor, now=now):
        raise ApiError(409, NOT_OPEN)  # resolved meanwhile (a check-in, a colleague first)
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="alert.keep_open",
        target=str(alert.id),
        org_id=principal.org_id,
        now=now,
    )
    return out(alert, await desk_alerts.handle_of(session, alert.defender_id))


@router.post("/{alert_id}/reopen", responses={404: {}, 409: {}})
async def reopen(
    alert_id: uuid.UUID, principal: AlertsWrite, session: SessionDep, vault: VaultDep, now: NowDep
) -> AlertOut:
    """Reopen a resolved alert; escalation starts again from the desk step."""
    alert = await _alert(session, principal, alert_id)
    try:
        await desk_alerts.reopen(session, vault, alert=alert, actor=principal.actor, now=now)
    except DeskConflict:
        raise ApiError(409, ALREADY_OPEN) from None
    return out(alert, await desk_alerts.handle_of(session, alert.defender_id))
