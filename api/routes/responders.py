"""The organisation's responders: roles, disabling, and the on-duty roster."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from api import errors
from api.deps import AdminDep, AlertsRead, NowDep, PrincipalDep, SessionDep, VaultDep
from api.errors import N_, ApiError
from core import audit, desk_chat, desk_sessions, recipients
from core.claims import locked, write_lock
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


class RosterOut(ResponderOut):
    # Paged for P0 alerts now, as paging chooses (core.recipients.desk). False: on duty, but
    # no linked chat with the bot, so no page reaches them.
    paged: bool


@dataclass(frozen=True)
class Roster:
    people: list[RosterOut]  # those paged, and those on duty whom no page reaches
    group: bool  # the organisation's responder group chat is paged too


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
    admins = await _admins(session, principal.org_id)  # locked first: changes take turns
    if principal.responder_id not in admins:  # demoted or disabled while this request waited
        raise ApiError(401, errors.UNAUTHENTICATED)  # as api.deps (PostgreSQL: found there)
    r = await _target(session, principal.org_id, responder_id)
    if r is None:
        raise ApiError(404, errors.NOT_FOUND)
    demoting = (
        body.role not in (None, Role.admin) or body.active is False
    ) and r.role is Role.admin
    if demoting and len(admins) <= 1 and r.active:
        raise ApiError(409, LAST_ADMIN)
    changes = body.model_dump(exclude_none=True)
    changed = [
        (action, field, getattr(r, field))
        for action, field in (("responder.role", "role"), ("responder.active", "active"))
        if field in changes and getattr(r, field) != changes[field]
    ]
    for _action, field, _was in changed:
        setattr(r, field, changes[field])
    if changed:  # old rights die with old sessions; before the audit trail's lock (_target)
        await desk_sessions.revoke_sessions(session, r.id, now)
    for action, field, was in changed:
        await audit.record(
            session,
            vault,
            actor=principal.actor,
            action=action,
            target=str(r.id),
            org_id=principal.org_id,
            detail={"from": str(was), "to": str(changes[field])},
            now=now,
        )
    pageable = r.active and r.role in desk_chat.ACTING
    if body.on_duty and not pageable:
        raise ApiError(409, NOT_PAGED)
    # Someone who can no longer act must not stay on duty: while anyone is on duty, only
    # those on duty are paged, so a demoted observer would be the only one paged.
    on_duty = body.on_duty if pageable else False
    if on_duty is not None and on_duty != r.on_duty:
        await _duty(session, vault, r, on_duty, principal.actor, now)
    return out(r)


async def _admins(session: SessionDep, org_id: uuid.UUID) -> set[uuid.UUID]:
    """The organisation's active admins, their rows locked until the transaction ends (SQLite:
    the writer's lock). Two admins demoting or disabling each other at once each counted two
    and passed, leaving none; and an admin disabled meanwhile still changed others' rights.
    Now the second change reads the admins after the first is committed."""
    await write_lock(session)
    stmt = select(Responder.id).where(
        Responder.org_id == org_id, Responder.role == Role.admin, Responder.active.is_(True)
    )
    query = locked(stmt.order_by(Responder.id), session, key_share=True)
    return set((await session.execute(query)).scalars())


async def _target(
    session: SessionDep, org_id: uuid.UUID, responder_id: uuid.UUID
) -> Responder | None:
    """The responder to change, read again under its lock (after the admins'). The lock order,
    kept by the responder's own requests too: responders' rows, then their sessions, then the
    audit trail's lock (core.audit). This change used to write its audit line first, while a
    request of the responder's own wrote its session's last-seen time, then its audit line
    (an alert viewed, going on duty): each waited for the other, and PostgreSQL aborted one.
    ``FOR UPDATE`` (not NO KEY): an assignment to them (core.desk_alerts.assign, ``FOR KEY
    SHARE``) and this change wait for each other, so none assigns a responder disabled
    meanwhile."""
    stmt = select(Responder).where(Responder.id == responder_id, Responder.org_id == org_id)
    stmt = locked(stmt.execution_options(populate_existing=True), session)
    return (await session.execute(stmt)).scalar_one_or_none()


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


async def paged_now(session: SessionDep, org_id: uuid.UUID) -> Roster:
    """Who a P0 alert pages now: the very selection paging makes, never a guess of it."""
    chosen = await recipients.desk(session, org_id)
    paged = {r.person for r in chosen if r.role == "responder"}
    on_duty = Responder.on_duty.is_(True) & Responder.active.is_(True)
    rows = await session.execute(
        select(Responder)
        .where(Responder.org_id == org_id, on_duty | Responder.id.in_(paged))
        .order_by(Responder.username)
    )
    people = [RosterOut(**out(r).model_dump(), paged=r.id in paged) for r in rows.scalars()]
    return Roster(people, group=any(r.role == "group" for r in chosen))


@router.get("/roster")
async def roster(principal: AlertsRead, session: SessionDep) -> list[RosterOut]:
    """Who is paged for P0 alerts now: the on-duty responders who linked a chat with the bot;
    when none of them has, every responder who has (``on_duty`` false). Those on duty without
    a linked chat are listed with ``paged`` false: no page reaches them. When no one is
    ``paged``, no responder is reachable (a linked responder group chat is still paged)."""
    return (await paged_now(session, principal.org_id)).people


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
