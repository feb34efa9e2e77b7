"""Invite codes a desk hands a defender: shown once, stored only as a blind index."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api import errors
from api.deps import (
    DefendersRead,
    DefendersWrite,
    LimitsDep,
    NowDep,
    SessionDep,
    SessionsDep,
    VaultDep,
)
from api.errors import ApiError
from core import audit, defenders, desk_defenders
from core.models import InviteCode

router = APIRouter(prefix="/invites", tags=["invites"])


class InviteIn(BaseModel):
    valid_hours: Annotated[int, Field(ge=1, le=24 * 30)] = 24 * 7


class InviteOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    state: str  # open, used, revoked, expired


class NewInvite(InviteOut):
    code: str  # shown once; give it to the defender through a safe channel


def out(i: InviteCode, now: datetime) -> InviteOut:
    if i.used_at is not None:
        state = "used"
    elif i.revoked_at is not None:
        state = "revoked"
    else:
        state = "expired" if i.expires_at <= now else "open"
    return InviteOut(
        id=i.id,
        created_at=i.created_at,
        expires_at=i.expires_at,
        used_at=i.used_at,
        revoked_at=i.revoked_at,
        state=state,
    )


@router.post("", status_code=201, responses={429: {}})
async def create_invite(
    body: InviteIn,
    principal: DefendersWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    limits: LimitsDep,
    sessions: SessionsDep,
) -> NewInvite:
    """A new single-use invite code for a defender; the code is in this answer only."""
    if not await limits.invite.hit(sessions, f"org:{principal.org_id}", now):
        raise ApiError(429, errors.TOO_MANY)
    invite, code = await defenders.create_invite(
        session,
        vault,
        org_id=principal.org_id,
        purpose="defender",
        now=now,
        ttl=timedelta(hours=body.valid_hours),
        created_by=principal.responder_id,
    )
    invite.created_at = now
    await session.flush()
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="invite.create",
        target=str(invite.id),
        org_id=principal.org_id,
        now=now,
    )
    return NewInvite(**out(invite, now).model_dump(), code=code)


@router.get("")
async def list_invites(
    principal: DefendersRead, session: SessionDep, now: NowDep
) -> list[InviteOut]:
    """The organisation's invite codes and their state (never the codes)."""
    return [out(i, now) for i in await desk_defenders.list_invites(session, principal.org_id)]


@router.delete("/{invite_id}", status_code=204, responses={404: {}, 409: {}})
async def revoke_invite(
    invite_id: uuid.UUID,
    principal: DefendersWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> None:
    """Revoke an unused invite code; 409 once it was used (a defender enrolled with it)."""
    revoked = await desk_defenders.revoke_invite(
        session,
        vault,
        org_id=principal.org_id,
        invite_id=invite_id,
        actor=principal.actor,
        now=now,
    )
    if revoked is None:
        raise ApiError(404, errors.NOT_FOUND)
    if not revoked:
        raise ApiError(409, errors.CONFLICT)
