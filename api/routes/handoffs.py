"""Hand-offs of cases between desks (core.handoffs): offered by the desk that follows the
defender, accepted or declined by the desk named, withdrawn by the first while it waits.
Listing is for anyone who reads defenders; offering and deciding, for admins."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api import errors
from api.deps import AdminDep, DefendersRead, NowDep, SessionDep, VaultDep
from api.errors import N_, ApiError
from core import desk_defenders, handoffs
from core.auth import Principal
from core.handoffs import Shown
from core.models import HandoffState

router = APIRouter(tags=["handoffs"])

# Why an offer or a decision is refused, for the desk's API and its forms (api.dashboard_handoffs).
REFUSALS = {
    handoffs.NOT_AGREED: (422, N_("confirm that the defender agreed to be handed to that desk")),
    handoffs.UNKNOWN_DESK: (422, N_("no other desk has exactly that name")),
    handoffs.NOT_FOLLOWED: (
        409,
        N_("only an active or paused defender of the offering desk can be handed on"),
    ),
    handoffs.OPEN_ALERT: (409, N_("this defender has an open alert: resolve it first")),
    handoffs.NO_KEY: (
        409,
        N_("the receiving desk has no organisation key yet: the defender could not send reports"),
    ),
    handoffs.WRITING: (
        409,
        N_("this defender is writing a report: the case can be handed on once it is sent"),
    ),
    handoffs.ALREADY_OFFERED: (409, N_("this defender is already offered to a desk")),
    handoffs.DECIDED: (409, N_("this hand-off was already accepted, declined or withdrawn")),
}


class HandoffIn(BaseModel):
    to_desk: Annotated[str, Field(min_length=1, max_length=200)]  # the desk's exact name
    defender_agreed: bool  # the defender agreed to be handed to that desk


class HandoffOut(BaseModel):
    id: uuid.UUID
    defender_id: uuid.UUID
    handle: str
    from_desk: str
    to_desk: str
    state: HandoffState
    created_at: datetime
    decided_at: datetime | None


class HandoffList(BaseModel):
    incoming: list[HandoffOut]  # offered to this desk, newest first (the last 50)
    outgoing: list[HandoffOut]  # offered by this desk


def out(shown: Shown) -> HandoffOut:
    h = shown.handoff
    return HandoffOut(
        id=h.id,
        defender_id=h.defender_id,
        handle=shown.handle,
        from_desk=shown.from_desk,
        to_desk=shown.to_desk,
        state=h.state,
        created_at=h.created_at,
        decided_at=h.decided_at,
    )


def refused(exc: handoffs.HandoffError) -> ApiError:
    status, message = REFUSALS[exc.code]
    return ApiError(status, message)


@router.get("/handoffs")
async def list_handoffs(principal: DefendersRead, session: SessionDep) -> HandoffList:
    """Hand-offs offered to this desk and by it, newest first."""
    incoming, outgoing = await handoffs.listing(session, principal.org_id)
    return HandoffList(incoming=[out(s) for s in incoming], outgoing=[out(s) for s in outgoing])


@router.post(
    "/defenders/{defender_id}/handoff", status_code=201, responses={404: {}, 409: {}, 422: {}}
)
async def offer(
    defender_id: uuid.UUID,
    body: HandoffIn,
    principal: AdminDep,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> HandoffOut:
    """Offer this defender to another desk of this deployment, named exactly. Nothing moves
    until that desk accepts; the defender must have agreed; not while an alert is open."""
    defender = await desk_defenders.get_defender(session, principal.org_id, defender_id)
    if defender is None:
        raise ApiError(404, errors.NOT_FOUND)
    try:
        handoff = await handoffs.offer(
            session,
            vault,
            defender=defender,
            to_desk=body.to_desk,
            agreed=body.defender_agreed,
            actor=principal.actor,
            now=now,
        )
    except handoffs.HandoffError as exc:
        raise refused(exc) from None
    return await _one(session, handoff.id)


async def _decide(
    handoff_id: uuid.UUID,
    verdict: str,
    principal: Principal,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> HandoffOut:
    try:
        found = await handoffs.decide(
            session,
            vault,
            org_id=principal.org_id,
            handoff_id=handoff_id,
            verdict=verdict,
            actor=principal.actor,
            now=now,
        )
    except handoffs.HandoffError as exc:
        raise refused(exc) from None
    if found is None:
        raise ApiError(404, errors.NOT_FOUND)
    return await _one(session, found.id)


async def _one(session: SessionDep, handoff_id: uuid.UUID) -> HandoffOut:
    return out(await handoffs.one(session, handoff_id))


@router.post("/handoffs/{handoff_id}/accept", responses={404: {}, 409: {}})
async def accept(
    handoff_id: uuid.UUID, principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> HandoffOut:
    """Take the case (this desk is the one it was offered to): the defender is this desk's
    from now on, under its default policy, and is told. Not while an alert is open."""
    return await _decide(handoff_id, "accept", principal, session, vault, now)


@router.post("/handoffs/{handoff_id}/decline", responses={404: {}, 409: {}})
async def decline(
    handoff_id: uuid.UUID, principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> HandoffOut:
    """Refuse the case: the defender stays with the desk that offered it."""
    return await _decide(handoff_id, "decline", principal, session, vault, now)


@router.post("/handoffs/{handoff_id}/withdraw", responses={404: {}, 409: {}})
async def withdraw(
    handoff_id: uuid.UUID, principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> HandoffOut:
    """Take back an offer this desk made, while it waits for an answer."""
    return await _decide(handoff_id, "withdraw", principal, session, vault, now)
