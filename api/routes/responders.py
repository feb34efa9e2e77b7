"""The organisation's responders: roles, disabling, and the on-duty roster."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from api import errors
from api.deps import AdminDep, AlertsRead, NowDep, PrincipalDep, SessionDep, VaultDep
from api.errors import N_, ApiError
from core import audit, auth, desk_chat
from core.models import Responder, Role

router = APIRouter(tags=["responders"])

LAST_ADMIN = N_("the organisation needs at least one active admin")
NOT_PAGED = N_("observers and disabled accounts are never paged, so never on duty")


class ResponderOut(BaseModel):
    id: uuid.UUID
    username: str
    role: Role
    active: bool
    on_duty: bool


class ResponderPatch(BaseModel):
    role: Role | None = None
    active: bool | None = None
    on_duty: bool | None = None


class DutyIn(BaseModel):
    on_duty: bool


class LinkCodeOut(BaseModel):
    code: str  # shown once: send "/desk CODE" (Signal: "desk CODE") to the bot
    expires_at: datetime


def out(r: Responder) -> ResponderOut:
    return ResponderOut(
        id=r.id, username=r.username, role=r.role, active=r.active, on_duty=r.on_duty
    )


@router.get("/responders")
async def list_responders(principal: AdminDep, session: SessionDep) -> list[ResponderOut]:
    """Every responder of the organisation."""
    rows = await session.execute(
        select(Responder).where(Responder.org_id == principal.org_id).order_by(Responder.username)
    )
    return [out(r) for r in rows.scalars()]


@router.patch("/responders/{responder_id}", responses={404: {}, 409: {}})
async def update_responder(
    responder_id: uuid.UUID,
    body: ResponderPatch,
    principal: AdminDep,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> ResponderOut:
    """Change a responder's role, disable or enable them, or set them on duty."""
    r = await session.get(Responder, responder_id)
    if r is None or r.org_id != principal.org_id:
        raise ApiError(404, errors.NOT_FOUND)
    demoting = (
        body.role not in (None, Role.admin) or body.active is False
    ) and r.role is Role.admin
    if demoting and await _admins(session, principal.org_id) <= 1 and r.active:
        raise ApiError(409, LAST_ADMIN)
    changes = body.model_dump(exclude_none=True)
    for action, field in (("responder.role", "role"), ("responder.active", "active")):
        if field in changes and getattr(r, field) != changes[field]:
            await audit.record(
                session,
                vault,
                actor=principal.actor,
                action=action,
                target=str(r.id),
                org_id=principal.org_id,
                detail={"from": str(getattr(r, field)), "to": str(changes[field])},
                now=now,
            )
            setattr(r, field, changes[field])
            await auth.revoke_sessions(session, r.id, now)  # old rights die with old sessions
    pageable = r.active and r.role in desk_chat.ACTING
    if body.on_duty and not pageable:
        raise ApiError(409, NOT_PAGED)
    # Someone who can no longer act must not stay on duty: while anyone is on duty, only
    # those on duty are paged, so a demoted observer would be the only one paged.
    on_duty = body.on_duty if pageable else False
    if on_duty is not None and on_duty != r.on_duty:
        await _duty(session, vault, r, on_duty, principal.actor, now)
    return out(r)


async def _admins(session: SessionDep, org_id: uuid.UUID) -> int:
    rows = await session.execute(
        select(Responder.id).where(
            Responder.org_id == org_id, Responder.role == Role.admin, Responder.active.is_(True)
        )
    )
    return len(rows.all())


async def _duty(
    session: SessionDep, vault: VaultDep, r: Responder, on: bool, actor: str, now: NowDep
) -> None:
    r.on_duty = on
    await audit.record(
        session,
        vault,
        actor=actor,
        action="roster.on_duty" if on else "roster.off_duty",
        target=str(r.id),
        org_id=r.org_id,
        now=now,
    )


@router.get("/roster")
async def roster(principal: AlertsRead, session: SessionDep) -> list[ResponderOut]:
    """Who is on duty now: the responders paged for P0 alerts."""
    rows = await session.execute(
        select(Responder)
        .where(
            Responder.org_id == principal.org_id,
            Responder.on_duty.is_(True),
            Responder.active.is_(True),
        )
        .order_by(Responder.username)
    )
    return [out(r) for r in rows.scalars()]


@router.put("/roster/me", responses={403: {}, 404: {}})
async def set_my_duty(
    body: DutyIn, principal: PrincipalDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> ResponderOut:
    """Go on or off duty yourself."""
    if principal.responder_id is None or principal.role is Role.observer:
        raise ApiError(403, errors.FORBIDDEN)  # integrations and observers are never paged
    r = await session.get(Responder, principal.responder_id)
    if r is None:
        raise ApiError(404, errors.NOT_FOUND)
    if r.on_duty != body.on_duty:
        await _duty(session, vault, r, body.on_duty, principal.actor, now)
    return out(r)


@router.post("/responders/me/link-code", status_code=201, responses={403: {}, 404: {}})
async def my_link_code(
    principal: PrincipalDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> LinkCodeOut:
    """A one-time code (15 minutes) that links your own Telegram or Signal chat with the bot,
    where your alerts then arrive; a new code replaces the previous one."""
    if principal.responder_id is None or principal.role not in desk_chat.ACTING:
        raise ApiError(403, errors.FORBIDDEN)  # integrations and observers are never paged
    r = await session.get(Responder, principal.responder_id)
    if r is None:
        raise ApiError(404, errors.NOT_FOUND)
    code, expires_at = await desk_chat.responder_code(
        session, vault, responder=r, actor=principal.actor, now=now
    )
    return LinkCodeOut(code=code, expires_at=expires_at)
