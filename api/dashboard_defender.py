"""One defender's page on the dashboard: their check-in health and regular check-in, how they
are reached (channel names), how many trusted contacts answered, their recent alerts and
reports, and pausing or resuming them (the forms post to api/dashboard_defenders.py). Opening
it is written to the audit trail, as opening an alert is (R23)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard import reader
from api.deps import NowDep, SessionDep, VaultDep
from api.pages import NOTICES, render
from core import alerts, audit, desk_defenders, handoffs
from core.defender_profile import profile

router = APIRouter(include_in_schema=False)


@router.get("/defenders/{defender_id}")
async def defender_page(
    defender_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    notice: str | None = None,
) -> Response:
    who = await reader(request, session, now, "defenders:read")
    if isinstance(who, Response):
        return who
    found = await desk_defenders.get_defender(session, who.principal.org_id, defender_id)
    if found is None:
        return render(request, "missing.html", 404, me=who)
    await audit.record(
        session,
        vault,
        actor=who.principal.actor,
        action="defender.view",
        target=str(found.id),
        org_id=who.principal.org_id,
        now=now,
    )
    careful = await alerts.not_to_contact(session, [found.id], org_id=who.principal.org_id)
    return render(
        request,
        "defender.html",
        me=who,
        p=await profile(session, found),
        careful=found.id in careful,
        offered=await handoffs.waiting(session, found.id),
        notice=NOTICES.get(notice or ""),
    )
