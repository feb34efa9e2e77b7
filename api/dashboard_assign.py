"""The dashboard's other alert actions: assign an alert to a responder of the organisation
(or to nobody), and reopen a resolved one (escalation starts again from the desk step).
Same sessions, CSRF, roles and audit as acknowledge and resolve (api/dashboard_alert.py)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from api.dashboard import to
from api.dashboard_alert import acting
from api.deps import NowDep, SessionDep, VaultDep
from core import desk_alerts
from core.desk_alerts import DeskConflict
from core.models import AlertState

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form(max_length=64)]


@router.post("/alerts/{alert_id}/assign")
async def assign(
    alert_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    responder: Text = "",  # empty: nobody
) -> Response:
    found = await acting(alert_id, request, session, now, csrf)
    if isinstance(found, Response):
        return found
    who, alert = found
    back = f"/alerts/{alert_id}"
    if alert.state is AlertState.resolved:
        return to(back + "?notice=not_open")
    try:
        target = uuid.UUID(responder) if responder else None
    except ValueError:
        return to(back)
    done = await desk_alerts.assign(
        session, vault, alert=alert, to=target, actor=who.principal.actor, now=now
    )  # another organisation's or a disabled responder: refused as unknown
    return to(back + ("?notice=assigned" if done else ""))


@router.post("/alerts/{alert_id}/reopen")
async def reopen(
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
    back = f"/alerts/{alert_id}"
    try:
        await desk_alerts.reopen(session, vault, alert=alert, actor=who.principal.actor, now=now)
    except DeskConflict:
        return to(back + "?notice=still_open")
    return to(back + "?notice=reopened")
