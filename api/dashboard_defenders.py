"""The dashboard's defenders: handles with check-in health (never names or addresses), pause and
resume, restoring one whose data was "deleted" under duress, and the invite codes a desk hands
defenders (each shown once)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from api import errors
from api.dashboard import PAGE, Text, Viewer, checked, reader, to
from api.deps import LimitsDep, NowDep, SessionDep, SessionsDep, VaultDep
from api.pages import NOTICES, render
from api.routes.defenders import HANDLE
from api.routes.invites import out as invite_out
from core import audit, defenders, desk_defenders

router = APIRouter(include_in_schema=False)

VALID_DAYS = (1, 7, 30)


async def page(
    request: Request,
    session: SessionDep,
    now: NowDep,
    who: Viewer,
    *,
    after: str | None = None,
    code: str | None = None,
    status: int = 200,
    notice: str | None = None,
) -> Response:
    rows, health, more = await desk_defenders.list_defenders(
        session, org_id=who.principal.org_id, status=None, after=after, limit=PAGE
    )
    invites = await desk_defenders.list_invites(session, who.principal.org_id)
    return render(
        request,
        "defenders.html",
        status,
        me=who,
        defenders=[(d, health[d.id]) for d in rows],
        more=more,
        invites=[(i, invite_out(i, now).state) for i in invites],
        code=code,
        days=VALID_DAYS,
        notice=notice,
    )


@router.get("/defenders")
async def defenders_page(
    request: Request,
    session: SessionDep,
    now: NowDep,
    after: Annotated[str | None, Query(max_length=40, pattern=HANDLE)] = None,
    notice: str | None = None,
) -> Response:
    who = await reader(request, session, now, "defenders:read")
    if isinstance(who, Response):
        return who
    return await page(request, session, now, who, after=after, notice=NOTICES.get(notice or ""))


async def _writer(
    request: Request, session: SessionDep, now: NowDep, csrf: str
) -> Viewer | Response:
    """The viewer of a form that changes defenders or invites, or where to send them instead."""
    who = await checked(request, session, now, csrf)
    if who is None:
        return to("/login")
    if who.principal.must_change_password or not who.may("defenders:write"):
        return to("/defenders?notice=forbidden")
    return who


@router.post("/defenders/{defender_id}/{action}")
async def pause_or_resume(
    defender_id: uuid.UUID,
    action: str,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
    back: Text = "",
) -> Response:
    """Pause (nothing escalates meanwhile), resume (a deadline missed meanwhile is due), or
    restore a defender hidden after a deletion forced with the duress PIN; then back to the
    list, or to the defender's page (``back`` = "defender") the form was on."""
    who = await _writer(request, session, now, csrf)
    if isinstance(who, Response):
        return who
    found = await desk_defenders.get_defender(session, who.principal.org_id, defender_id)
    if found is None or action not in ("pause", "resume", "restore"):
        return render(request, "missing.html", 404, me=who)
    actor = who.principal.actor
    if action == "restore":
        await desk_defenders.restore(session, vault, defender=found, actor=actor, now=now)
    else:
        paused = action == "pause"
        await desk_defenders.set_paused(
            session, vault, defender=found, paused=paused, actor=actor, now=now
        )
    return to(f"/defenders/{found.id}" if back == "defender" else "/defenders")


@router.post("/invites")
async def create_invite(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    limits: LimitsDep,
    sessions: SessionsDep,
    csrf: Text = "",
    days: Annotated[int, Form(ge=1, le=30)] = 7,
) -> Response:
    """A single-use code, shown on this answer only (not kept, not in a URL)."""
    who = await _writer(request, session, now, csrf)
    if isinstance(who, Response):
        return who
    org_id = who.principal.org_id
    if not await limits.invite.hit(sessions, f"org:{org_id}", now):
        return await page(request, session, now, who, status=429, notice=errors.TOO_MANY)
    invite, code = await defenders.create_invite(
        session,
        vault,
        org_id=org_id,
        purpose="defender",
        now=now,
        ttl=timedelta(days=days),
        created_by=who.principal.responder_id,
    )
    invite.created_at = now
    await session.flush()
    await audit.record(
        session,
        vault,
        actor=who.principal.actor,
        action="invite.create",
        target=str(invite.id),
        org_id=org_id,
        now=now,
    )
    return await page(request, session, now, who, code=code)


@router.post("/invites/{invite_id}/revoke")
async def revoke_invite(
    invite_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    csrf: Text = "",
) -> Response:
    who = await _writer(request, session, now, csrf)
    if isinstance(who, Response):
        return who
    if (
        await desk_defenders.revoke_invite(
            session,
            vault,
            org_id=who.principal.org_id,
            invite_id=invite_id,
            actor=who.principal.actor,
            now=now,
        )
        is None
    ):  # unknown, or another organisation's (R18)
        return render(request, "missing.html", 404, me=who)
    return to("/defenders")  # used meanwhile: listed as used, nothing changed
