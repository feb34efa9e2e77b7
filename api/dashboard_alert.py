"""One alert on the dashboard: its page (what happened, in order, and what the responder may
do now), and acting on it: acknowledge, resolve, add a sealed note. Assigning and reopening
are in api/dashboard_assign.py; sessions, CSRF and the queue in api/dashboard.py."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.dashboard import Text, Viewer, checked, to, viewer
from api.deps import NowDep, SessionDep, VaultDep
from api.errors import ApiError
from api.pages import NOTICES, OUTCOMES, actor_names, render
from api.routes.alerts import acknowledge_alert, resolve_alert
from core import alerts, audit, desk_alerts, desk_defenders, desk_reports
from core.desk_alerts import DeskConflict
from core.models import (
    Alert,
    AlertEvent,
    AlertKind,
    CheckIn,
    CheckInState,
    Organisation,
    Responder,
)

router = APIRouter(include_in_schema=False)


@router.get("/alerts/{alert_id}")
async def alert_page(
    alert_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    notice: str | None = None,
) -> Response:
    """One alert: what happened, in order, and what the responder may do now."""
    who = await viewer(request, session, now)
    if who is None:
        return to("/login")
    if who.principal.must_change_password:
        return to("/password")
    if not who.may("alerts:read"):
        return to("/reports")
    alert = await desk_alerts.get_alert(session, who.principal.org_id, alert_id)
    if alert is None:
        return render(request, "missing.html", 404, me=who)
    await audit.record(
        session,
        vault,
        actor=who.principal.actor,
        action="alert.view",
        target=str(alert.id),
        org_id=who.principal.org_id,
        now=now,
    )
    events, notes = await desk_alerts.timeline(session, alert.id)
    org = await session.get(Organisation, who.principal.org_id)
    staff = select(Responder.id, Responder.username, Responder.active).where(
        Responder.org_id == who.principal.org_id
    )
    rows = (await session.execute(staff.order_by(Responder.username))).all()
    names = {row[0]: row[1] for row in rows}
    who_did = actor_names(request, names)
    # A note has no author when the defender wrote it (flows.panic.told): who added it, then.
    added = {e.detail.get("note"): e.actor for e in events if e.kind == "note_added"}
    authors = {
        n.id: (n.author_id and names.get(n.author_id)) or who_did(added.get(str(n.id)))
        for n in notes
    }
    # Duress on another open alert of the defender (a panic "called off" with the duress PIN
    # stays open beside it): this one's page warns as well.
    careful = alert.do_not_contact or (
        alert.open_key is not None
        and alert.defender_id
        in await alerts.not_to_contact(session, [alert.defender_id], org_id=alert.org_id)
    )
    # An urgent report's alert leads to the report (and any other filed while it is open).
    filed = []
    if alert.kind is AlertKind.report and who.may("reports:read"):
        filed = await desk_reports.filed_between(
            session,
            org_id=alert.org_id,
            defender_id=alert.defender_id,
            start=alert.triggered_at,
            end=alert.resolved_at,
        )
    return render(
        request,
        "alert.html",
        me=who,
        alert=alert,
        careful=careful,
        filed=filed,
        missed=await missed_deadline(session, alert, events),
        handle=await desk_alerts.handle_of(session, alert.defender_id),
        # No link to a defender no longer this desk's (handed to another, or data deleted).
        linked=await desk_defenders.get_defender(session, alert.org_id, alert.defender_id)
        is not None,
        events=[(e, who_did(e.actor)) for e in events],
        location=None if alert.location_sealed is None else b64(alert.location_sealed),
        notes=[(n, authors[n.id], b64(n.sealed)) for n in notes],
        keyed=org is not None and org.public_key is not None,
        outcomes=OUTCOMES,
        assignee=names.get(alert.assigned_to) if alert.assigned_to else None,
        staff=[(str(rid), name) for rid, name, active in rows if active],
        notice=NOTICES.get(notice or ""),
    )


def deadline_of(event: AlertEvent) -> datetime | None:
    """The deadline a missed check-in event names (core.alerts: "due_at", ISO 8601)."""
    raw = event.detail.get("due_at") if isinstance(event.detail, dict) else None
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


async def missed_deadline(
    session: AsyncSession, alert: Alert, events: list[AlertEvent]
) -> datetime | None:
    """When the check-in a missed_checkin alert is about was due: as its opening event says,
    else (an alert opened before events said it) the defender's last missed one-off check-in
    due before the alert was raised. None for other kinds, or when nothing tells."""
    if alert.kind is not AlertKind.missed_checkin:
        return None
    for event in events:
        if event.kind == "triggered" and (due := deadline_of(event)) is not None:
            return due
    stmt = (
        select(CheckIn.due_at)
        .where(
            CheckIn.defender_id == alert.defender_id,
            CheckIn.state == CheckInState.missed,
            CheckIn.due_at <= alert.triggered_at,
        )
        .order_by(CheckIn.due_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def acting(
    alert_id: uuid.UUID, request: Request, session: AsyncSession, now: datetime, csrf: str
) -> tuple[Viewer, Alert] | Response:
    who = await checked(request, session, now, csrf)
    if who is None:
        return to("/login")
    back = f"/alerts/{alert_id}"
    if not who.may("alerts:write") or who.principal.must_change_password:
        return to(back + "?notice=forbidden")
    alert = await desk_alerts.get_alert(session, who.principal.org_id, alert_id)
    if alert is None:
        return render(request, "missing.html", 404, me=who)
    return who, alert


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(
    alert_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
) -> Response:
    found = await acting(alert_id, request, session, now, csrf)
    if isinstance(found, Response):
        return found
    who, alert = found
    try:
        await acknowledge_alert(session, vault, who.principal, alert, now)
    except ApiError:
        return to(f"/alerts/{alert_id}?notice=not_open")
    return to(f"/alerts/{alert_id}?notice=acknowledged")


@router.post("/alerts/{alert_id}/resolve")
async def resolve(
    alert_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    outcome: Annotated[str, Form(max_length=24)] = "",
) -> Response:
    found = await acting(alert_id, request, session, now, csrf)
    if isinstance(found, Response):
        return found
    who, alert = found
    if outcome not in OUTCOMES:
        return to(f"/alerts/{alert_id}")
    try:
        await resolve_alert(session, vault, who.principal, alert, outcome, now)
    except ApiError:
        return to(f"/alerts/{alert_id}?notice=not_open")
    return to("/?notice=resolved")


@router.post("/alerts/{alert_id}/notes")
async def add_note(
    alert_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    text: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    """A note for the desk, sealed to the organisation key on arrival (never kept in clear)."""
    found = await acting(alert_id, request, session, now, csrf)
    if isinstance(found, Response):
        return found
    who, alert = found
    org = await session.get(Organisation, who.principal.org_id)
    if not text.strip() or org is None:
        return to(f"/alerts/{alert_id}")
    try:
        await desk_alerts.add_note(
            session,
            vault,
            alert=alert,
            org=org,
            text=text,
            author_id=who.principal.responder_id,
            actor=who.principal.actor,
            now=now,
        )
    except DeskConflict:
        return to(f"/alerts/{alert_id}?notice=no_key")
    return to(f"/alerts/{alert_id}?notice=note")
