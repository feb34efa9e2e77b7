"""Who an escalation step reaches, and through which address.

A person may have several addresses (Telegram, Signal…); the preferred one that has not failed
permanently is used first. A blocked address is still tried when it is the only one left:
marking an address blocked must never silence a person completely.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import (
    ChannelAddress,
    Consent,
    Defender,
    DefenderStatus,
    DeskGroup,
    Responder,
    Role,
    TrustedContact,
)

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class Recipient:
    role: str  # "defender", "contact", "responder" or "group"
    person: uuid.UUID  # the defender, contact, responder or group's organisation: in keys
    address_id: uuid.UUID
    channel: str
    locale: str


_ORDER = (ChannelAddress.blocked_at.is_not(None), ChannelAddress.preference, ChannelAddress.id)


def _first_by_owner(
    rows: Iterable[tuple[uuid.UUID | None, uuid.UUID, str]],
) -> dict[uuid.UUID, tuple[uuid.UUID, str]]:
    best: dict[uuid.UUID, tuple[uuid.UUID, str]] = {}
    for owner, address_id, channel in rows:
        if owner is not None:
            best.setdefault(owner, (address_id, channel))
    return best


def best_address_on(address: Any, owner: Any, status: Any) -> Any:
    """A join condition: ``address`` (an alias of channel_addresses) is the best address of the
    defender ``owner`` whose status is ``status`` (columns of a larger query: the sweep's
    claim), as ``defender_addresses`` picks it, and none for a hidden defender."""
    best = select(ChannelAddress.id).where(ChannelAddress.defender_id == owner)
    best = best.order_by(*_ORDER).limit(1)
    return (address.c.id == best.scalar_subquery()) & (status != DefenderStatus.hidden)


async def defender_addresses(
    session: AsyncSession, defender_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, tuple[uuid.UUID, str]]:
    """The best (address id, channel) of each defender, in one query. A defender hidden after
    a forced deletion has none: their phone must get nothing a deleted one would not."""
    ids = list(defender_ids)
    if not ids:
        return {}
    stmt = (
        select(ChannelAddress.defender_id, ChannelAddress.id, ChannelAddress.channel)
        .join(Defender, Defender.id == ChannelAddress.defender_id)
        .where(ChannelAddress.defender_id.in_(ids), Defender.status != DefenderStatus.hidden)
        .order_by(*_ORDER)
    )
    return _first_by_owner((await session.execute(stmt)).all())


async def defender(session: AsyncSession, person: Defender) -> Recipient | None:
    best = (await defender_addresses(session, [person.id])).get(person.id)
    if best is None:
        return None
    return Recipient("defender", person.id, best[0], best[1], person.locale)


async def contacts(
    session: AsyncSession, person: Defender, *, only: set[uuid.UUID] | None = None
) -> list[Recipient]:
    """The defender's confirmed trusted contacts (declined, revoked or pending ones never)."""
    if only is not None and not only:
        return []
    stmt = (
        select(TrustedContact.id, TrustedContact.locale, ChannelAddress.id, ChannelAddress.channel)
        .join(ChannelAddress, ChannelAddress.id == TrustedContact.address_id)
        .where(
            TrustedContact.defender_id == person.id, TrustedContact.consent == Consent.confirmed
        )
        .order_by(TrustedContact.created_at, TrustedContact.id)
    )
    if only is not None:
        stmt = stmt.where(TrustedContact.id.in_(only))
    return [
        Recipient("contact", cid, aid, channel, locale or person.locale)
        for cid, locale, aid, channel in (await session.execute(stmt)).all()
    ]


async def contacts_of(
    session: AsyncSession, people: Iterable[Defender]
) -> dict[uuid.UUID, list[Recipient]]:
    """The confirmed trusted contacts of many defenders, in one query."""
    by_id = {p.id: p for p in people}
    found: dict[uuid.UUID, list[Recipient]] = {d: [] for d in by_id}
    if not by_id:
        return found
    stmt = (
        select(TrustedContact.defender_id, TrustedContact.id, TrustedContact.locale)
        .add_columns(ChannelAddress.id, ChannelAddress.channel)
        .join(ChannelAddress, ChannelAddress.id == TrustedContact.address_id)
        .where(
            TrustedContact.defender_id.in_(list(by_id)),
            TrustedContact.consent == Consent.confirmed,
        )
        .order_by(TrustedContact.created_at, TrustedContact.id)
    )
    for did, cid, locale, aid, channel in await session.execute(stmt):
        who = Recipient("contact", cid, aid, channel, locale or by_id[did].locale)
        found[did].append(who)
    return found


DESK_LOCALE = "en"  # responders have no language setting yet: desk notices are in English


def group_locale(chosen: str | None) -> str:
    """The responder group's language: the one the desk set for it, else the default (an
    organisation has no language of its own yet, so English)."""
    return chosen or DESK_LOCALE


PAGED = (Role.admin, Role.responder)  # observers read the desk; they are never paged


def _responders() -> Select[uuid.UUID, bool, uuid.UUID, str]:
    return (
        select(Responder.id, Responder.on_duty, ChannelAddress.id)
        .add_columns(ChannelAddress.channel)
        .join(ChannelAddress, ChannelAddress.responder_id == Responder.id)
        .where(Responder.active.is_(True), Responder.role.in_(PAGED))
        .order_by(Responder.id, *_ORDER)
    )


def _one_each(rows: Iterable[tuple[uuid.UUID, bool, uuid.UUID, str]]) -> list[Recipient]:
    seen: dict[uuid.UUID, Recipient] = {}
    for rid, _duty, aid, channel in rows:
        seen.setdefault(rid, Recipient("responder", rid, aid, channel, DESK_LOCALE))
    return list(seen.values())


def _sparing(stmt: S, sparing: uuid.UUID | None) -> S:
    """None of the chats of ``sparing`` (a defender under duress): see ``desk``."""
    if sparing is None:
        return stmt
    return stmt.where(
        ChannelAddress.defender_id.is_(None) | (ChannelAddress.defender_id != sparing)
    )


async def desk(
    session: AsyncSession, org_id: uuid.UUID, *, sparing: uuid.UUID | None = None
) -> list[Recipient]:
    """On-duty responders with an address; every active responder when nobody is on duty,
    because an alert that reaches no one is the worst outcome. And the organisation's
    responder group, if one is linked (role "group"; see ``core.desk_chat``). ``sparing``: a
    defender under duress, none of whose own chats may be paged (one that is also a
    responder's chat would put "do not contact the device" on the device)."""
    stmt = _sparing(_responders().where(Responder.org_id == org_id), sparing)
    rows = (await session.execute(stmt)).all()
    found = _one_each([r for r in rows if r[1]] or rows)
    group = await desk_group(session, org_id)
    return found if group is None else [*found, group]


async def desk_group(session: AsyncSession, org_id: uuid.UUID) -> Recipient | None:
    """The organisation's responder group chat, if one is linked."""
    stmt = (
        select(ChannelAddress.id, ChannelAddress.channel, DeskGroup.locale)
        .join(DeskGroup, DeskGroup.address_id == ChannelAddress.id)
        .where(DeskGroup.org_id == org_id)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        return None
    return Recipient("group", org_id, row[0], row[1], group_locale(row[2]))


async def admins(session: AsyncSession, org_id: uuid.UUID) -> list[Recipient]:
    """The organisation's active admins who linked a chat, each at their best address."""
    stmt = _responders().where(Responder.org_id == org_id, Responder.role == Role.admin)
    return _one_each((await session.execute(stmt)).all())


async def responders(
    session: AsyncSession, ids: set[uuid.UUID], *, sparing: uuid.UUID | None = None
) -> list[Recipient]:
    """These responders (on duty or not), each at their best address; ``sparing`` as for
    ``desk``."""
    if not ids:
        return []
    rows = await session.execute(_sparing(_responders().where(Responder.id.in_(ids)), sparing))
    return _one_each(rows)


async def stand_ins(
    session: AsyncSession,
    org_id: uuid.UUID,
    *,
    besides: set[uuid.UUID],
    sparing: uuid.UUID | None = None,
) -> list[Recipient]:
    """The organisation's other responders, each at their best address, for a desk notice
    its responder cannot get: reachable ones (an address not blocked) first, and among them
    those on duty first. ``sparing`` as for ``desk``."""
    stmt = _responders().add_columns(ChannelAddress.blocked_at)
    stmt = _sparing(stmt.where(Responder.org_id == org_id), sparing)
    if besides:
        stmt = stmt.where(Responder.id.not_in(besides))
    best: dict[uuid.UUID, tuple[bool, bool, Recipient]] = {}
    for rid, on_duty, aid, channel, blocked_at in (await session.execute(stmt)).all():
        if rid not in best:
            who = Recipient("responder", rid, aid, channel, DESK_LOCALE)
            best[rid] = (blocked_at is not None, not on_duty, who)
    return [who for *_rank, who in sorted(best.values(), key=lambda b: b[:2])]


async def alternatives(
    session: AsyncSession, failed: ChannelAddress, *, sparing: uuid.UUID | None = None
) -> list[ChannelAddress]:
    """The same person's other addresses, best first (a contact may have only one);
    ``sparing`` as for ``desk``."""
    if failed.defender_id is not None:
        owner = ChannelAddress.defender_id == failed.defender_id
    elif failed.responder_id is not None:
        owner = ChannelAddress.responder_id == failed.responder_id
    else:
        return []
    stmt = select(ChannelAddress).where(owner, ChannelAddress.id != failed.id).order_by(*_ORDER)
    stmt = _sparing(stmt, sparing)
    return list((await session.execute(stmt)).scalars())
