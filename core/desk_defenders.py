"""The desk's view of defenders: generated handles and check-in health, never names or
addresses; pausing and resuming; restoring one hidden after a forced deletion; which
escalation policy applies; invite codes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit, checkins, discreet
from core.claims import locked, write_lock
from core.crypto import Vault
from core.models import (
    Alert,
    AlertState,
    CheckIn,
    CheckInState,
    Defender,
    DefenderStatus,
    EscalationPolicy,
    InviteCode,
    Organisation,
)

LIVE = (CheckInState.armed, CheckInState.reminded, CheckInState.missed)
DESK_PAUSE = "desk"  # ``paused_reason`` of check-ins the desk paused


@dataclass(frozen=True)
class Health:
    state: str  # hidden, paused, alert, missed, overdue, ok, no_checkin
    next_due_at: datetime | None
    not_deleted: int = 0  # messages discreet mode could not delete from their phone (R12)
    alert_id: uuid.UUID | None = None  # their most urgent open alert (the desk's link to it)


async def list_defenders(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    status: DefenderStatus | None,
    after: str | None,
    limit: int,
) -> tuple[list[Defender], dict[uuid.UUID, Health], str | None]:
    """A page of defenders ordered by handle, their health, and the next page's handle."""
    query = select(Defender).where(Defender.org_id == org_id)
    if status is None:
        query = query.where(Defender.status != DefenderStatus.deleted)
    else:
        query = query.where(Defender.status == status)
    if after is not None:
        query = query.where(Defender.handle > after)
    rows = list(
        (await session.execute(query.order_by(Defender.handle).limit(limit + 1))).scalars()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    health = await _health(session, rows)
    return rows, health, rows[-1].handle if more else None


async def _health(session: AsyncSession, defenders: list[Defender]) -> dict[uuid.UUID, Health]:
    ids = [d.id for d in defenders]
    if not ids:
        return {}
    checkins = (
        await session.execute(
            select(CheckIn.defender_id, CheckIn.state, CheckIn.due_at).where(
                CheckIn.defender_id.in_(ids), CheckIn.state.in_(LIVE)
            )
        )
    ).all()
    open_alerts = await session.execute(
        select(Alert.defender_id, Alert.id)
        .where(Alert.defender_id.in_(ids), Alert.state != AlertState.resolved)
        .order_by(Alert.priority, Alert.triggered_at.desc(), Alert.id)
    )
    alerting: dict[uuid.UUID, uuid.UUID] = {}
    for defender_id, alert_id in open_alerts:
        alerting.setdefault(defender_id, alert_id)  # the most urgent, the newest first
    not_deleted = await discreet.not_deleted_counts(session, ids)
    result = {}
    for d in defenders:
        mine = [c for c in checkins if c.defender_id == d.id]
        states = {c.state for c in mine}
        due = min((c.due_at for c in mine if c.state is CheckInState.armed), default=None)
        if d.status is DefenderStatus.hidden:
            state = "hidden"
        elif d.status is DefenderStatus.paused:
            state = "paused"
        elif d.id in alerting:
            state = "alert"
        elif CheckInState.missed in states:
            state = "missed"
        elif CheckInState.reminded in states:
            state = "overdue"
        else:
            state = "ok" if mine else "no_checkin"
        result[d.id] = Health(state, due, not_deleted.get(d.id, 0), alerting.get(d.id))
    return result


async def health_of(session: AsyncSession, defender: Defender) -> Health:
    return (await _health(session, [defender]))[defender.id]


async def get_defender(
    session: AsyncSession, org_id: uuid.UUID, defender_id: uuid.UUID
) -> Defender | None:
    query = select(Defender).where(
        Defender.id == defender_id,
        Defender.org_id == org_id,
        Defender.status != DefenderStatus.deleted,
    )
    return (await session.execute(query)).scalar_one_or_none()


async def ids_by_handle(
    session: AsyncSession, org_id: uuid.UUID, handles: list[str]
) -> dict[str, uuid.UUID]:
    """The organisation's defenders among ``handles`` (their data not deleted): the pages
    that list defenders by handle link each to theirs."""
    if not handles:
        return {}
    query = select(Defender.handle, Defender.id).where(
        Defender.org_id == org_id,
        Defender.handle.in_(handles),
        Defender.status != DefenderStatus.deleted,
    )
    return {row.handle: row.id for row in await session.execute(query)}


async def _locked(session: AsyncSession, defender: Defender) -> Defender:
    """The defender read again under its lock, before its check-ins (core.checkins' order).
    A status read before is stale: a "delete my data" (real, or forced with the duress PIN)
    committed meanwhile was overwritten, "paused" over "hidden", and the bot knew the
    defender again on the phone."""
    await write_lock(session)
    stmt = select(Defender).where(Defender.id == defender.id)
    stmt = stmt.execution_options(populate_existing=True)
    return (await session.execute(locked(stmt, session, key_share=True))).scalar_one()


async def set_paused(
    session: AsyncSession,
    vault: Vault,
    *,
    defender: Defender,
    paused: bool,
    actor: str,
    now: datetime,
) -> bool:
    """Pause (or resume) the defender's check-ins; False when the status does not allow it.

    Resuming re-arms the paused check-ins; a deadline that passed during the pause is due at
    once, so the defender is asked to check in rather than silently skipped.
    """
    defender = await _locked(session, defender)
    if defender.status is not (DefenderStatus.active if paused else DefenderStatus.paused):
        return False
    defender.status = DefenderStatus.paused if paused else DefenderStatus.active
    if paused:
        live = CheckIn.state.in_((CheckInState.armed, CheckInState.reminded))
        held = await session.execute(
            update(CheckIn)
            .where(CheckIn.defender_id == defender.id, live)
            .values(
                version=CheckIn.version + 1, state=CheckInState.paused, paused_reason=DESK_PAUSE
            )
            .returning(CheckIn.id)
            .execution_options(synchronize_session=False)
        )
        # Their reminders still waiting go no more: the resume asks again.
        await checkins.withdraw_reminders(session, list(held.scalars()))
    else:
        # Every paused check-in, the defender's own pause's too: else they would stay paused
        # behind an "active" defender, never asked again, a missed deadline escalating nowhere.
        await checkins.resume_held(session, defender=defender, now=now)
    await audit.record(
        session,
        vault,
        actor=actor,
        action="defender.pause" if paused else "defender.resume",
        target=str(defender.id),
        org_id=defender.org_id,
        now=now,
    )
    return True


async def restore(
    session: AsyncSession, vault: Vault, *, defender: Defender, actor: str, now: datetime
) -> bool:
    """Undo a deletion forced with the duress PIN (core.defenders.hide): the bot knows the
    defender again, menu and reminders included. False if the defender is not hidden."""
    defender = await _locked(session, defender)
    if defender.status is not DefenderStatus.hidden:
        return False
    paused = select(CheckIn.id).where(
        CheckIn.defender_id == defender.id, CheckIn.state == CheckInState.paused
    )
    held = (await session.execute(paused.limit(1))).first() is not None
    defender.status = DefenderStatus.paused if held else DefenderStatus.active
    await audit.record(
        session,
        vault,
        actor=actor,
        action="defender.restore",
        target=str(defender.id),
        org_id=defender.org_id,
        now=now,
    )
    return True


async def set_policy(
    session: AsyncSession,
    vault: Vault,
    *,
    defender: Defender,
    policy_id: uuid.UUID | None,
    actor: str,
    now: datetime,
) -> bool:
    """Apply one of the organisation's policies (None: its default); False if not found."""
    await policies_turn(session, defender.org_id)
    if policy_id is not None:
        found = await session.execute(
            select(EscalationPolicy.id).where(
                EscalationPolicy.id == policy_id, EscalationPolicy.org_id == defender.org_id
            )
        )
        if found.first() is None:
            return False
    defender.policy_id = policy_id
    await checkins.follow_policy(session, org_id=defender.org_id, defender_id=defender.id, now=now)
    await audit.record(
        session,
        vault,
        actor=actor,
        action="defender.policy",
        target=str(defender.id),
        org_id=defender.org_id,
        detail={"policy": None if policy_id is None else str(policy_id)},
        now=now,
    )
    return True


async def policies_turn(session: AsyncSession, org_id: uuid.UUID) -> None:
    """Wait for the organisation's policy changes under way (saved, deleted, assigned) and
    hold off the next until this transaction ends: they take turns, each reading the policies
    after the one before. Else two saves of one policy both write its next version, the last
    keeping the other's name with its own ladder; two policies made the default at once
    leave none; and on PostgreSQL a rename (a key change: the policy row locked FOR UPDATE)
    and an assignment (the defender row, then its foreign key's FOR KEY SHARE on the policy)
    deadlock. The lock order: the organisation's row first, then policies, defenders and
    check-ins (core.checkins). ``FOR NO KEY UPDATE``: a defender created meanwhile (its
    foreign key) does not wait. SQLite: the writer's lock."""
    await write_lock(session)
    stmt = select(Organisation.id).where(Organisation.id == org_id)
    await session.execute(locked(stmt, session, key_share=True))


async def list_invites(session: AsyncSession, org_id: uuid.UUID) -> list[InviteCode]:
    query = (
        select(InviteCode)
        .where(InviteCode.org_id == org_id, InviteCode.purpose == "defender")
        .order_by(InviteCode.created_at.desc())
        .limit(500)
    )
    return list((await session.execute(query)).scalars())


async def revoke_invite(
    session: AsyncSession,
    vault: Vault,
    *,
    org_id: uuid.UUID,
    invite_id: uuid.UUID,
    actor: str,
    now: datetime,
) -> bool | None:
    """Revoke an unused code: True (done, or revoked already), None when unknown (or another
    organisation's), False when it was used: a defender enrolled with it. The code is read
    under its lock (SQLite: the writer's lock), which a redeeming (core.defenders.take_invite,
    an UPDATE) holds until it commits: read before, a code redeemed meanwhile was revoked as
    well, used and revoked at once, and the desk told it was revoked."""
    await write_lock(session)
    query = select(InviteCode).where(
        InviteCode.id == invite_id, InviteCode.org_id == org_id, InviteCode.purpose == "defender"
    )
    query = locked(query.execution_options(populate_existing=True), session, key_share=True)
    invite = (await session.execute(query)).scalar_one_or_none()
    if invite is None:
        return None
    if invite.used_at is not None:
        return False
    if invite.revoked_at is None:
        invite.revoked_at = now
        await audit.record(
            session,
            vault,
            actor=actor,
            action="invite.revoke",
            target=str(invite.id),
            org_id=org_id,
            now=now,
        )
    return True
