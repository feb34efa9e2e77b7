"""Handing a case to another desk (DESIGN.md: networks of exiled defenders hand cases between
desks). The desk that follows a defender offers them to another organisation of this
deployment, named exactly (no list of the other desks is shown); that desk accepts or
declines; until then the offering desk may withdraw the offer. Offering and deciding are for
admins (``org:admin``): the case's data leaves one organisation for another.

What moves on acceptance is the defender: from then on their check-ins, alerts and reports
reach the receiving desk, under the receiving desk's default escalation policy. What the first
desk already holds stays there (alerts, reports sealed to its key, roll-call answers, its
audit trail): per-record confidentiality, nothing re-sealed or copied. So no hand-off happens
while an alert is open: one desk at a time answers for an emergency. The defender agreed
beforehand (the offering desk says so, the form asks it), and is told once it is done, in
words that name no organisation (SECURITY.md R9; discreet mode: only "your group"). The
receiving desk's admins are told of an offer in their linked chats, and the offering desk's
hear the answer (desk notices name neither desk: a responder's phone can be seized too).

Only ids and states are kept, never a note: the desks talk about the case elsewhere.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core import actions, audit, notices, recipients, reports
from core.claims import locked, write_lock
from core.crypto import Vault
from core.models import (
    Alert,
    AlertState,
    Conversation,
    Defender,
    DefenderStatus,
    Evidence,
    Handoff,
    HandoffState,
    Organisation,
    Priority,
)
from core.outbox import Item, enqueue_many

FOLLOWED = (DefenderStatus.active, DefenderStatus.paused)  # a case that can be handed on
# A report being written: the report flow's conversation (flows.report.NAME), or a report set
# aside while the defender checks in (flows.router_states.RESUME in the conversation's data).
REPORT_FLOW, SET_ASIDE = "report", "_resume"
OPEN = (AlertState.triggered, AlertState.acknowledged)


class HandoffError(Exception):
    """Why a hand-off cannot be offered or decided; ``code``: one of the module's reasons."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


NOT_AGREED = "not_agreed"  # the defender's agreement was not confirmed
UNKNOWN_DESK = "unknown_desk"  # no other organisation has that exact name
NOT_FOLLOWED = "not_followed"  # the defender is not active or paused (or no longer ours)
OPEN_ALERT = "open_alert"  # an alert is open: it is resolved first
NO_KEY = "no_key"  # the receiving desk has no key pair yet: reports could not reach it
WRITING = "writing"  # a report is being written: its parts are sealed to this desk's key
ALREADY_OFFERED = "already_offered"  # an offer is waiting for an answer
DECIDED = "decided"  # the offer was already accepted, declined or withdrawn


@dataclass(frozen=True)
class Shown:
    """A hand-off as a desk lists it: the defender's handle and the other desk's name."""

    handoff: Handoff
    handle: str
    from_desk: str
    to_desk: str


async def offer(
    session: AsyncSession,
    vault: Vault,
    *,
    defender: Defender,
    to_desk: str,
    agreed: bool,
    actor: str,
    now: datetime,
) -> Handoff:
    """Offer ``defender`` (of the caller's organisation) to the organisation named
    ``to_desk``."""
    if not agreed:
        raise HandoffError(NOT_AGREED)
    await write_lock(session)
    stmt = select(Defender).where(Defender.id == defender.id)
    found = (await session.execute(locked(stmt, session))).scalar_one()
    if found.status not in FOLLOWED:
        raise HandoffError(NOT_FOLLOWED)
    name = to_desk.strip()
    target = await session.scalar(select(Organisation.id).where(Organisation.name == name))
    if target is None or target == found.org_id:
        raise HandoffError(UNKNOWN_DESK)
    await _keyed(session, target)
    if await _alert_open(session, found.id):
        raise HandoffError(OPEN_ALERT)
    if await writing(session, vault, found.id, now):
        raise HandoffError(WRITING)
    if await _waiting(session, found.id) is not None:
        raise HandoffError(ALREADY_OFFERED)
    handoff = Handoff(
        id=uuid.uuid4(),
        defender_id=found.id,
        from_org_id=found.org_id,
        to_org_id=target,
        offered_by=actor,
        created_at=now,
    )
    try:
        async with session.begin_nested():  # one open offer per defender (PostgreSQL races)
            session.add(handoff)
    except IntegrityError:
        raise HandoffError(ALREADY_OFFERED) from None
    await _audit(session, vault, handoff, "handoff.offer", actor, now, found.org_id)
    await _tell_admins(session, vault, handoff, target, "offer", found.handle, now)
    return handoff


async def decide(
    session: AsyncSession,
    vault: Vault,
    *,
    org_id: uuid.UUID,
    handoff_id: uuid.UUID,
    verdict: str,
    actor: str,
    now: datetime,
) -> Handoff | None:
    """``verdict``: "accept" or "decline" (the receiving desk, ``org_id``), or "withdraw"
    (the offering desk). None: no such hand-off for this organisation (a foreign one too)."""
    await write_lock(session)
    mine = Handoff.from_org_id if verdict == "withdraw" else Handoff.to_org_id
    find = select(Handoff.defender_id).where(Handoff.id == handoff_id, mine == org_id)
    defender_id = await session.scalar(find)
    if defender_id is None:
        return None
    # PostgreSQL: the defender's row first, then the hand-off's, the order a deletion of the
    # defender's data (core.defenders.delete_data, which withdraws the offer) takes them in.
    await session.execute(locked(select(Defender.id).where(Defender.id == defender_id), session))
    stmt = (
        select(Handoff).where(Handoff.id == handoff_id).execution_options(populate_existing=True)
    )
    handoff = (await session.execute(locked(stmt, session))).scalar_one()
    if handoff.state is not HandoffState.offered:
        raise HandoffError(DECIDED)
    if verdict == "accept":
        await _move(session, vault, handoff, now)
    state = {"accept": HandoffState.accepted, "decline": HandoffState.declined}
    handoff.state = state.get(verdict, HandoffState.withdrawn)
    handoff.decided_by, handoff.decided_at = actor, now
    action = f"handoff.{verdict}"
    for org in {handoff.from_org_id, handoff.to_org_id}:  # both desks' trails keep it
        await _audit(session, vault, handoff, action, actor, now, org)
    if verdict != "withdraw":  # the offering desk hears the answer
        handle = await session.scalar(select(Defender.handle).where(Defender.id == defender_id))
        await _tell_admins(session, vault, handoff, handoff.from_org_id, verdict, handle, now)
    return handoff


async def _move(session: AsyncSession, vault: Vault, handoff: Handoff, now: datetime) -> None:
    """The defender (locked by ``decide``) becomes the receiving desk's, under its default
    policy, and is told."""
    stmt = select(Defender).where(Defender.id == handoff.defender_id)
    defender = (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one()
    if defender.org_id != handoff.from_org_id or defender.status not in FOLLOWED:
        raise HandoffError(NOT_FOLLOWED)
    if await _alert_open(session, defender.id):
        raise HandoffError(OPEN_ALERT)
    if await writing(session, vault, defender.id, now):
        raise HandoffError(WRITING)
    await _keyed(session, handoff.to_org_id)
    defender.org_id, defender.policy_id = handoff.to_org_id, None
    who = await recipients.defender(session, defender)
    if who is not None:
        told = notices.handed_off(defender.locale, discreet=defender.discreet)
        key = actions.key(f"h:{handoff.id.hex}", who)
        item = Item(
            who.channel,
            int(Priority.P3),
            key,
            message=told,
            address_id=who.address_id,
            recipient="defender",
        )
        await enqueue_many(session, vault, [item], now=now)


async def _tell_admins(
    session: AsyncSession,
    vault: Vault,
    handoff: Handoff,
    org_id: uuid.UUID,
    step: str,
    handle: str | None,
    now: datetime,
) -> None:
    """A desk notice to ``org_id``'s admins in their linked chats (the dashboard lists it
    anyway: an admin with no chat linked finds it there)."""
    items = [
        Item(
            who.channel,
            int(Priority.P1),
            actions.key(f"h:{handoff.id.hex}:{step}", who),
            message=notices.desk_handoff(who.locale, handle or "", step),
            address_id=who.address_id,
            recipient="responder",
        )
        for who in await recipients.admins(session, org_id)
    ]
    await enqueue_many(session, vault, items, now=now)


async def withdraw_for(session: AsyncSession, defender_id: uuid.UUID, now: datetime) -> None:
    """The defender's data was deleted: an offer still waiting is withdrawn."""
    await session.execute(
        update(Handoff)
        .where(Handoff.defender_id == defender_id, Handoff.state == HandoffState.offered)
        .values(state=HandoffState.withdrawn, decided_by="defender", decided_at=now)
        .execution_options(synchronize_session=False)
    )


async def waiting(session: AsyncSession, defender_id: uuid.UUID) -> Shown | None:
    """The defender's offer still waiting for an answer, if any."""
    found = await _waiting(session, defender_id)
    return None if found is None else await one(session, found.id)


async def one(session: AsyncSession, handoff_id: uuid.UUID) -> Shown:
    return (await _shown(session, [Handoff.id == handoff_id], 1))[0]


async def of(session: AsyncSession, org_id: uuid.UUID, ids: Iterable[uuid.UUID]) -> list[Shown]:
    """Those of ``ids`` that are hand-offs this organisation made or received."""
    mine = or_(Handoff.from_org_id == org_id, Handoff.to_org_id == org_id)
    return await _shown(session, [Handoff.id.in_(list(ids)), mine], None)


async def listing(
    session: AsyncSession, org_id: uuid.UUID, *, limit: int = 50
) -> tuple[list[Shown], list[Shown]]:
    """The organisation's hand-offs, newest first: (offered to it, offered by it)."""
    incoming = await _shown(session, [Handoff.to_org_id == org_id], limit)
    outgoing = await _shown(session, [Handoff.from_org_id == org_id], limit)
    return incoming, outgoing


async def _shown(session: AsyncSession, where: list[object], limit: int | None) -> list[Shown]:
    source, target = aliased(Organisation), aliased(Organisation)
    stmt = (
        select(Handoff, Defender.handle, source.name, target.name)
        .join(Defender, Defender.id == Handoff.defender_id)
        .join(source, source.id == Handoff.from_org_id)
        .join(target, target.id == Handoff.to_org_id)
        .where(*where)  # type: ignore[arg-type]
        .order_by(Handoff.created_at.desc(), Handoff.id)
        .limit(limit)
    )
    return [Shown(*row) for row in await session.execute(stmt)]


async def _waiting(session: AsyncSession, defender_id: uuid.UUID) -> Handoff | None:
    stmt = select(Handoff).where(
        Handoff.defender_id == defender_id, Handoff.state == HandoffState.offered
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def writing(
    session: AsyncSession, vault: Vault, defender_id: uuid.UUID, now: datetime
) -> bool:
    """Whether the defender is writing a report: its parts and files are sealed to the
    current desk's key as they come (core.reports), so the report must reach that desk; a
    hand-off waits until it is sent (or the draft lapses)."""
    unfiled = select(Evidence.id).where(
        Evidence.defender_id == defender_id, Evidence.filed_at.is_(None)
    )
    if (await session.execute(unfiled.limit(1))).first() is not None:
        return True
    stmt = select(Conversation).where(Conversation.defender_id == defender_id)
    talk = (await session.execute(stmt)).scalar_one_or_none()
    if talk is None or (talk.expires_at is not None and talk.expires_at <= now):
        return False
    if talk.flow == REPORT_FLOW:
        return True
    raw = talk.get(vault, "data_enc")
    return raw is not None and SET_ASIDE in json.loads(raw)


async def _keyed(session: AsyncSession, org_id: uuid.UUID) -> None:
    """The receiving desk must have a key pair: a report is sealed to it, and without one the
    defender could not send any."""
    try:
        await reports.org_key(session, org_id)
    except reports.NoOrgKey:
        raise HandoffError(NO_KEY) from None


async def _alert_open(session: AsyncSession, defender_id: uuid.UUID) -> bool:
    stmt = select(Alert.id).where(Alert.defender_id == defender_id, Alert.state.in_(OPEN))
    return (await session.execute(stmt.limit(1))).first() is not None


async def _audit(
    session: AsyncSession,
    vault: Vault,
    handoff: Handoff,
    action: str,
    actor: str,
    now: datetime,
    org_id: uuid.UUID,
) -> None:
    await audit.record(
        session,
        vault,
        actor=actor,
        action=action,
        target=str(handoff.id),
        org_id=org_id,
        now=now,
    )
