"""One defender as the desk sees them (the dashboard's defender page): check-in health, the
regular check-in, how they are reached (channel names, never addresses), how many trusted
contacts answered (counts, never who), and their recent alerts and reports. Nothing the bot
itself would not tell the desk elsewhere (R7 is about the phone; R24: still only the last
check-in time)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import contacts, desk_defenders
from core.desk_defenders import Health
from core.models import (
    Alert,
    ChannelAddress,
    CheckIn,
    CheckInKind,
    CheckInState,
    Consent,
    Defender,
    EscalationPolicy,
    Report,
)

RECENT = 20  # alerts and reports listed, the newest first


@dataclass(frozen=True)
class Routine:
    time: str  # "HH:MM", the defender's local time
    days: str  # weekday digits, Monday = 0
    paused: bool


@dataclass(frozen=True)
class Profile:
    defender: Defender
    health: Health
    routine: Routine | None
    channels: list[tuple[str, bool]]  # (channel, blocked: a permanent failure was seen)
    contacts_confirmed: int
    contacts_waiting: int  # invited, not answered yet
    policy: str | None  # the escalation policy's name; None: the organisation's default
    alerts: list[Alert]
    reports: list[Report]


async def profile(session: AsyncSession, defender: Defender) -> Profile:
    """``defender`` (already scoped to the viewer's organisation) as the desk's page shows
    them."""
    health = await desk_defenders.health_of(session, defender)
    routine = await _routine(session, defender.id)
    places = select(ChannelAddress.channel, ChannelAddress.blocked_at).where(
        ChannelAddress.defender_id == defender.id
    )
    channels = [
        (channel, blocked is not None)
        for channel, blocked in (
            await session.execute(places.order_by(ChannelAddress.preference))
        ).all()
    ]
    counted = await contacts.counts(session, defender_id=defender.id)
    policy = None
    if defender.policy_id is not None:
        found = await session.get(EscalationPolicy, defender.policy_id)
        policy = found.name if found is not None else None
    return Profile(
        defender=defender,
        health=health,
        routine=routine,
        channels=channels,
        contacts_confirmed=counted[Consent.confirmed],
        contacts_waiting=counted[Consent.invited],
        policy=policy,
        alerts=await _latest(session, Alert, Alert.triggered_at, defender),
        reports=await _latest(session, Report, Report.created_at, defender),
    )


async def _routine(session: AsyncSession, defender_id: uuid.UUID) -> Routine | None:
    stmt = (
        select(CheckIn.routine_time, CheckIn.routine_days, CheckIn.state)
        .where(
            CheckIn.defender_id == defender_id,
            CheckIn.kind == CheckInKind.routine,
            CheckIn.routine_time.is_not(None),
            CheckIn.state.in_((*desk_defenders.LIVE, CheckInState.paused)),
        )
        .limit(1)
    )
    row = (await session.execute(stmt)).first()
    if row is None or row.routine_time is None:
        return None
    return Routine(row.routine_time, row.routine_days or "", row.state is CheckInState.paused)


async def _latest(
    session: AsyncSession, model: type[Alert] | type[Report], at: Any, defender: Defender
) -> list[Any]:
    """The defender's newest ``model`` rows by ``at`` (their alerts or reports)."""
    stmt = (
        select(model)
        .where(model.defender_id == defender.id, model.org_id == defender.org_id)
        .order_by(at.desc())
        .limit(RECENT)
    )
    return list((await session.execute(stmt)).scalars())
