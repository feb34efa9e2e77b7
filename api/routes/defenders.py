"""Defenders under their generated handles, with check-in health; pause, resume, restore
(after a deletion forced with the duress PIN), policy."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api import errors
from api.deps import DefendersRead, DefendersWrite, NowDep, SessionDep, VaultDep
from api.errors import N_, ApiError
from core import audit, desk_defenders
from core.auth import Principal
from core.desk_defenders import Health
from core.models import Defender, DefenderStatus

router = APIRouter(prefix="/defenders", tags=["defenders"])
HANDLE = r"^[^\x00]*$"  # a handle (a page cursor): PostgreSQL refuses a NUL in text

CANNOT_PAUSE = N_("only an active defender can be paused, and only a paused one resumed")
NOT_HIDDEN = N_("only a defender whose data was deleted under duress can be restored")


class DefenderOut(BaseModel):
    id: uuid.UUID
    handle: str
    status: DefenderStatus
    last_checkin_at: datetime | None
    health: str  # hidden, paused, alert, missed, overdue, ok, no_checkin
    next_due_at: datetime | None
    policy_id: uuid.UUID | None
    # Sensitive messages discreet mode could not delete from their phone in the last 30 days
    # (Telegram's 48-hour limit passed, or the deletions kept failing): ask them, through a
    # safe channel, to delete them by hand.
    messages_not_deleted: int


class DefenderPage(BaseModel):
    items: list[DefenderOut]
    next_cursor: str | None  # the last handle of this page


class PolicyIn(BaseModel):
    policy_id: uuid.UUID | None


def out(d: Defender, health: Health) -> DefenderOut:
    return DefenderOut(
        id=d.id,
        handle=d.handle,
        status=d.status,
        last_checkin_at=d.last_checkin_at,
        health=health.state,
        next_due_at=health.next_due_at,
        policy_id=d.policy_id,
        messages_not_deleted=health.not_deleted,
    )


@router.get("")
async def list_defenders(
    principal: DefendersRead,
    session: SessionDep,
    status: DefenderStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=40, pattern=HANDLE)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DefenderPage:
    """Defenders by handle with their check-in health (never names or addresses)."""
    rows, health, following = await desk_defenders.list_defenders(
        session, org_id=principal.org_id, status=status, after=cursor, limit=limit
    )
    return DefenderPage(items=[out(d, health[d.id]) for d in rows], next_cursor=following)


@router.get("/{defender_id}", responses={404: {}})
async def get_defender(
    defender_id: uuid.UUID,
    principal: DefendersRead,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> DefenderOut:
    """One defender with their check-in health (never a name or an address); audited, as the
    dashboard's defender page is."""
    defender = await _defender(session, principal, defender_id)
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="defender.view",
        target=str(defender.id),
        org_id=principal.org_id,
        now=now,
    )
    return out(defender, await desk_defenders.health_of(session, defender))


async def _defender(session: SessionDep, principal: Principal, defender_id: uuid.UUID) -> Defender:
    defender = await desk_defenders.get_defender(session, principal.org_id, defender_id)
    if defender is None:
        raise ApiError(404, errors.NOT_FOUND)
    return defender


async def _pause(
    defender_id: uuid.UUID,
    paused: bool,
    principal: Principal,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> DefenderOut:
    defender = await _defender(session, principal, defender_id)
    if not await desk_defenders.set_paused(
        session, vault, defender=defender, paused=paused, actor=principal.actor, now=now
    ):
        raise ApiError(409, CANNOT_PAUSE)
    return out(defender, await desk_defenders.health_of(session, defender))


@router.post("/{defender_id}/pause", responses={404: {}, 409: {}})
async def pause(
    defender_id: uuid.UUID,
    principal: DefendersWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> DefenderOut:
    """Pause the defender's check-ins (nothing escalates while paused)."""
    return await _pause(defender_id, True, principal, session, vault, now)


@router.post("/{defender_id}/resume", responses={404: {}, 409: {}})
async def resume(
    defender_id: uuid.UUID,
    principal: DefendersWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> DefenderOut:
    """Resume the defender's check-ins; a deadline missed meanwhile is due at once."""
    return await _pause(defender_id, False, principal, session, vault, now)


@router.post("/{defender_id}/restore", responses={404: {}, 409: {}})
async def restore(
    defender_id: uuid.UUID,
    principal: DefendersWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> DefenderOut:
    """Undo a "delete my data" forced with the duress PIN (status ``hidden``): since then the
    bot has answered the defender's phone as a stranger's and sent it nothing, while their
    data, check-ins and contacts stayed. Once they are safe, this makes the bot know them
    again."""
    defender = await _defender(session, principal, defender_id)
    if not await desk_defenders.restore(
        session, vault, defender=defender, actor=principal.actor, now=now
    ):
        raise ApiError(409, NOT_HIDDEN)
    return out(defender, await desk_defenders.health_of(session, defender))


@router.put("/{defender_id}/policy", responses={404: {}})
async def set_policy(
    defender_id: uuid.UUID,
    body: PolicyIn,
    principal: DefendersWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> DefenderOut:
    """Apply one of the organisation's escalation policies (null: the default)."""
    defender = await _defender(session, principal, defender_id)
    if not await desk_defenders.set_policy(
        session, vault, defender=defender, policy_id=body.policy_id, actor=principal.actor, now=now
    ):
        raise ApiError(404, errors.NOT_FOUND)
    return out(defender, await desk_defenders.health_of(session, defender))
