"""Escalation policies: the ladder each new alert freezes a copy of when it opens."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from api import errors
from api.deps import NowDep, PoliciesRead, PoliciesWrite, SessionDep, VaultDep
from api.errors import N_, ApiError
from core import audit, checkins, desk_defenders
from core.auth import Principal
from core.escalation import Policy
from core.models import Defender, DefenderStatus, EscalationPolicy

router = APIRouter(prefix="/policies", tags=["policies"])

DUPLICATE = N_("a policy with this name already exists")
IN_USE = N_("defenders still use this policy")
FOLLOWED = N_("defenders follow this default policy: make another policy the default first")

Seconds = Annotated[int, Field(ge=0, le=7 * 86400)]


class Steps(BaseModel):
    """Durations in seconds (DESIGN.md, "Escalation semantics")."""

    pre_reminder_s: Annotated[int, Field(ge=60, le=86400)] | None = 10 * 60
    grace_s: Seconds = 15 * 60
    desk_after_s: Seconds = 15 * 60
    repeat_s: Annotated[int, Field(ge=60, le=86400)] = 15 * 60
    ack_timeout_s: Annotated[int, Field(ge=60, le=7 * 86400)] = 60 * 60
    early_checkin_s: Annotated[int, Field(ge=0, le=86400)] = 60 * 60


class PolicyIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    steps: Steps
    # Omitted: a new policy is not the default, a replaced one keeps its flag. The default
    # changes when another policy is made the default, never by leaving the field out.
    is_default: bool | None = None


class PolicyOut(PolicyIn):
    id: uuid.UUID
    is_default: bool
    version: int


def out(p: EscalationPolicy) -> PolicyOut:
    return PolicyOut(
        id=p.id,
        name=p.name,
        steps=Steps.model_validate(Policy.from_json(p.steps).to_json()),
        is_default=p.is_default,
        version=p.version,
    )


async def _policy(
    session: SessionDep, principal: Principal, policy_id: uuid.UUID
) -> EscalationPolicy:
    p = await session.get(EscalationPolicy, policy_id)
    if p is None or p.org_id != principal.org_id:
        raise ApiError(404, errors.NOT_FOUND)
    return p


async def _followed(session: SessionDep, org_id: uuid.UUID) -> bool:
    """Whether a defender follows the organisation's default policy (has none of their own):
    without a default, they would fall back to the built-in ladder, slower than most."""
    stmt = select(Defender.id).where(
        Defender.org_id == org_id,
        Defender.policy_id.is_(None),
        Defender.status != DefenderStatus.deleted,  # a hidden one may be restored
    )
    return (await session.execute(stmt.limit(1))).first() is not None


async def _save(
    session: SessionDep,
    vault: VaultDep,
    principal: Principal,
    p: EscalationPolicy,
    body: PolicyIn,
    now: NowDep,
) -> PolicyOut:
    steps = Policy.from_json(body.steps.model_dump()).to_json()  # the engine's own check too
    is_default = bool(p.is_default) if body.is_default is None else body.is_default
    if p.is_default and not is_default and await _followed(session, principal.org_id):
        raise ApiError(409, FOLLOWED)
    if is_default:
        await session.execute(
            update(EscalationPolicy)
            .where(EscalationPolicy.org_id == principal.org_id, EscalationPolicy.id != p.id)
            .values(is_default=False)
            .execution_options(synchronize_session=False)
        )
    p.name, p.steps, p.is_default = body.name, steps, is_default
    try:
        async with session.begin_nested():
            session.add(p)
            await session.flush()
    except IntegrityError:
        raise ApiError(409, DUPLICATE) from None
    # The live check-ins of the defenders it governs take its grace and pre-reminder now,
    # not at their next check-in (core.checkins.follow_policy).
    await checkins.follow_policy(session, org_id=principal.org_id, now=now)
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="policy.save",
        target=str(p.id),
        org_id=principal.org_id,
        detail={"version": p.version},
        now=now,
    )
    return out(p)


@router.get("")
async def list_policies(principal: PoliciesRead, session: SessionDep) -> list[PolicyOut]:
    """The organisation's escalation policies."""
    rows = await session.execute(
        select(EscalationPolicy)
        .where(EscalationPolicy.org_id == principal.org_id)
        .order_by(EscalationPolicy.name)
    )
    return [out(p) for p in rows.scalars()]


@router.post("", status_code=201, responses={409: {}})
async def create_policy(
    body: PolicyIn, principal: PoliciesWrite, session: SessionDep, vault: VaultDep, now: NowDep
) -> PolicyOut:
    """Create a policy; validated so that no ladder can stop escalating."""
    await desk_defenders.policies_turn(session, principal.org_id)
    p = EscalationPolicy(id=uuid.uuid4(), org_id=principal.org_id, version=1)
    return await _save(session, vault, principal, p, body, now)


@router.get("/{policy_id}", responses={404: {}})
async def get_policy(
    policy_id: uuid.UUID, principal: PoliciesRead, session: SessionDep
) -> PolicyOut:
    """One policy."""
    return out(await _policy(session, principal, policy_id))


@router.put("/{policy_id}", responses={404: {}, 409: {}})
async def update_policy(
    policy_id: uuid.UUID,
    body: PolicyIn,
    principal: PoliciesWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> PolicyOut:
    """Replace a policy; alerts already open keep the copy they froze. Without
    ``is_default`` it stays the default, or not, as it was."""
    await desk_defenders.policies_turn(session, principal.org_id)  # read after the last save
    p = await _policy(session, principal, policy_id)
    p.version += 1
    return await _save(session, vault, principal, p, body, now)


@router.delete("/{policy_id}", status_code=204, responses={404: {}, 409: {}})
async def delete_policy(
    policy_id: uuid.UUID,
    principal: PoliciesWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> None:
    """Delete a policy no defender uses; defenders without a policy of their own use the
    default one."""
    await desk_defenders.policies_turn(session, principal.org_id)
    p = await _policy(session, principal, policy_id)
    used = await session.execute(select(Defender.id).where(Defender.policy_id == p.id).limit(1))
    if used.first() is not None:
        raise ApiError(409, IN_USE)
    if p.is_default and await _followed(session, principal.org_id):
        raise ApiError(409, FOLLOWED)
    await session.delete(p)
    await audit.record(
        session,
        vault,
        actor=principal.actor,
        action="policy.delete",
        target=str(p.id),
        org_id=principal.org_id,
        now=now,
    )
