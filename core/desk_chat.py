"""Responders in chat: link codes, linked private chats, the desk's responder group.

A responder asks the API for a link code (15 minutes, one live code each, only its blind index
stored, as for invite codes) and sends ``/desk CODE`` (``desk CODE`` on Signal) to the bot in a
private chat: that chat becomes one of the responder's addresses. An admin's group code, sent
in a group, makes that group the organisation's responder group (one per organisation; linking
again replaces it, keeping the language the desk chose for the group's posts). In the group,
only linked responders of that organisation with the admin or responder role may acknowledge
or resolve, through the same core functions as the API; the group hears of changes made
elsewhere (``core.follow_ups``), never an echo of its own.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import alert_handling, audit, notices
from core.claims import locked, write_lock
from core.crypto import Vault
from core.defenders import create_invite, find_address, index_of, new_address, take_invite
from core.models import (
    Alert,
    AlertState,
    ChannelAddress,
    DeskGroup,
    InviteCode,
    Responder,
    Role,
)

LINK_TTL = timedelta(minutes=15)
RESPONDER, GROUP = "responder_link", "desk_group"  # InviteCode.purpose of each kind of code
ACTING = (Role.admin, Role.responder)  # observers read; they never act from a chat

# Typed words, compared on ``core.text.fold``ed text: "/desk CODE", "/desk@bot CODE" (Telegram
# groups name the bot), "desk CODE" (Signal); "ack CODE" / "safe CODE" with an alert's code.
_COMMAND = re.compile(r"/?(desk|ack|safe)(?:@[a-z0-9_]{1,64})?\s+([a-z0-9]{6,8})")


@dataclass(frozen=True)
class Command:
    verb: str  # "desk", "ack" or "safe"
    code: str


def parse(folded: str) -> Command | None:
    """A desk command in ``folded`` text, or None (everything else is ignored in groups)."""
    match = _COMMAND.fullmatch(folded)
    if match is None:
        return None
    verb, code = match.groups()
    if (verb == "desk") != (len(code) == 8):  # link codes have 8 characters, alerts 6
        return None
    return Command(verb, code)


# --- codes (the API) -------------------------------------------------------------------------


async def _code(
    session: AsyncSession,
    vault: Vault,
    purpose: str,
    org_id: uuid.UUID,
    by: uuid.UUID | None,
    *,
    actor: str,
    now: datetime,
) -> tuple[str, datetime]:
    """A fresh code; the earlier live one of its kind (the responder's, the group's) dies."""
    mine = purpose == RESPONDER
    owner = InviteCode.created_by == by if mine else InviteCode.org_id == org_id
    live = (InviteCode.used_at.is_(None), InviteCode.revoked_at.is_(None))
    stmt = update(InviteCode).where(*live, InviteCode.purpose == purpose, owner)
    await session.execute(stmt.values(revoked_at=now))
    invite, code = await create_invite(
        session, vault, org_id=org_id, purpose=purpose, now=now, ttl=LINK_TTL, created_by=by
    )
    invite.created_at = now
    action, target = ("responder.link_code", str(by)) if mine else ("desk_group.link_code", None)
    await audit.record(
        session, vault, actor=actor, action=action, target=target, org_id=org_id, now=now
    )
    return code, invite.expires_at


async def responder_code(
    session: AsyncSession, vault: Vault, *, responder: Responder, actor: str, now: datetime
) -> tuple[str, datetime]:
    """A fresh code for linking this responder's private chat; any earlier one dies."""
    org_id = responder.org_id
    return await _code(session, vault, RESPONDER, org_id, responder.id, actor=actor, now=now)


async def group_code(
    session: AsyncSession,
    vault: Vault,
    *,
    org_id: uuid.UUID,
    created_by: uuid.UUID | None,
    actor: str,
    now: datetime,
) -> tuple[str, datetime]:
    """A fresh code for linking the organisation's responder group; any earlier one dies."""
    return await _code(session, vault, GROUP, org_id, created_by, actor=actor, now=now)


async def unlink_group(
    session: AsyncSession, vault: Vault, *, org_id: uuid.UUID, actor: str, now: datetime
) -> bool:
    """Forget the organisation's group (and its chat id); False if none was linked."""
    row = await session.get(DeskGroup, org_id)
    if row is None:
        return False
    await session.execute(delete(ChannelAddress).where(ChannelAddress.id == row.address_id))
    await session.execute(delete(DeskGroup).where(DeskGroup.org_id == org_id))
    await audit.record(
        session, vault, actor=actor, action="desk_group.unlink", org_id=org_id, now=now
    )
    return True


# --- codes redeemed in chat ------------------------------------------------------------------


async def link_responder(
    session: AsyncSession, vault: Vault, *, code: str, address: ChannelAddress, now: datetime
) -> Responder | None:
    """Make ``address`` (a private chat) the responder's address on its channel; None for a
    wrong, expired, used or revoked code, or a responder no longer allowed to act: read
    under a lock (``_held``). Read without one, a responder an admin disabled or demoted at
    that moment had their chat linked all the same."""
    await write_lock(session)
    invite = await take_invite(session, vault, purpose=RESPONDER, code=code, now=now)
    if invite is None or invite.created_by is None:
        return None
    responder = await _held(session, invite.created_by)
    if responder is None or not responder.active or responder.role not in ACTING:
        return None
    if address.responder_id not in (None, responder.id):
        # Another account's chat (a coordinator at two desks): taking it would leave that
        # account, maybe its whole desk, paging no one, unseen. One chat per account.
        return None
    # One chat per channel: a newly linked chat replaces the old one.
    mine = (ChannelAddress.responder_id == responder.id, ChannelAddress.channel == address.channel)
    older = update(ChannelAddress).where(*mine, ChannelAddress.id != address.id)
    await session.execute(older.values(responder_id=None))
    address.responder_id, address.blocked_at = responder.id, None
    await audit.record(
        session,
        vault,
        actor=f"responder:{responder.id}",
        action="responder.chat_link",
        target=str(responder.id),
        org_id=responder.org_id,
        detail={"channel": address.channel},
        now=now,
    )
    return responder


async def link_group(
    session: AsyncSession, vault: Vault, *, code: str, channel: str, group: str, now: datetime
) -> uuid.UUID | None:
    """Make chat ``group`` the responder group of the code's organisation; its id or None."""
    await write_lock(session)
    invite = await take_invite(session, vault, purpose=GROUP, code=code, now=now)
    if invite is None:
        return None
    if invite.created_by is not None:  # its admin may have been removed since (A4)
        admin = await _held(session, invite.created_by)
        if admin is None or not admin.active or admin.role is not Role.admin:
            return None
    address = await address_of(session, vault, channel, group)
    address.blocked_at = None  # the bot is in the group: it can post there again
    old = await session.get(DeskGroup, invite.org_id)
    locale = None if old is None else old.locale  # the desk's choice outlives a relink
    if old is not None and old.address_id != address.id:  # the old group's chat id goes
        await session.execute(delete(ChannelAddress).where(ChannelAddress.id == old.address_id))
    others = select(DeskGroup.org_id).where(
        DeskGroup.address_id == address.id, DeskGroup.org_id != invite.org_id
    )
    for (lost,) in (await session.execute(others)).all():  # said in that desk's own log
        await audit.record(
            session,
            vault,
            actor="chat",
            action="desk_group.taken",
            org_id=lost,
            detail={"channel": channel},
            now=now,
        )
    await session.execute(  # one organisation per group: it leaves any other organisation
        delete(DeskGroup).where(
            (DeskGroup.org_id == invite.org_id) | (DeskGroup.address_id == address.id)
        )
    )
    row = DeskGroup(org_id=invite.org_id, address_id=address.id, linked_by=invite.created_by)
    row.created_at, row.locale = now, locale
    session.add(row)
    await session.flush()
    await audit.record(
        session,
        vault,
        actor="chat" if invite.created_by is None else f"responder:{invite.created_by}",
        action="desk_group.link",
        org_id=invite.org_id,
        detail={"channel": channel},
        now=now,
    )
    return invite.org_id


async def _held(session: AsyncSession, responder_id: uuid.UUID) -> Responder | None:
    """The responder, read under a lock until the transaction ends: the caller links a chat
    only if they may still act (PostgreSQL: ``FOR KEY SHARE``, which PATCH /responders'
    ``FOR UPDATE`` waits for, and waits for; SQLite: the writer's lock, which the caller
    took before anything else)."""
    stmt = select(Responder).where(Responder.id == responder_id)
    stmt = stmt.execution_options(populate_existing=True)
    return (
        await session.execute(locked(stmt, session, key_share=True, read=True))
    ).scalar_one_or_none()


async def address_of(
    session: AsyncSession, vault: Vault, channel: str, value: str
) -> ChannelAddress:
    """The chat's address row (encrypted, with its blind index), created if new."""
    found = await find_address(session, channel, await index_of(session, vault, channel, value))
    if found is None:
        found = new_address(vault, channel, value)
        session.add(found)
        await session.flush()
    return found


# --- acting from the group -------------------------------------------------------------------


async def group_of(
    session: AsyncSession, vault: Vault, channel: str, chat: str
) -> DeskGroup | None:
    """The responder group in this chat (looked up under both keys during a rotation)."""
    stmt = (
        select(DeskGroup)
        .join(ChannelAddress, ChannelAddress.id == DeskGroup.address_id)
        .where(
            ChannelAddress.channel == channel,
            ChannelAddress.blind_index.in_(vault.address_indexes(channel, chat)),
        )
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def acting_responder(
    session: AsyncSession, vault: Vault, *, org_id: uuid.UUID, channel: str, sender: str | None
) -> Responder | None:
    """The sender, if their private chat is linked to an active admin or responder of
    ``org_id``; None for strangers, observers and other organisations' responders."""
    if not sender:
        return None
    stmt = (
        select(Responder)
        .join(ChannelAddress, ChannelAddress.responder_id == Responder.id)
        .where(
            ChannelAddress.channel == channel,
            ChannelAddress.blind_index.in_(vault.address_indexes(channel, sender)),
            Responder.org_id == org_id,
            Responder.active.is_(True),
            Responder.role.in_(ACTING),
        )
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def open_alert(
    session: AsyncSession,
    org_id: uuid.UUID,
    *,
    code: str | None = None,
    alert_id: str | None = None,
) -> Alert | None:
    """One of the organisation's open alerts, by short code or by id; None otherwise."""
    stmt = select(Alert).where(Alert.org_id == org_id, Alert.state != AlertState.resolved)
    if alert_id is not None:
        try:
            stmt = stmt.where(Alert.id == uuid.UUID(hex=alert_id))
        except ValueError:
            return None
        return (await session.execute(stmt)).scalar_one_or_none()
    wanted = (code or "").upper()
    for alert in (await session.execute(stmt)).scalars():
        if notices.short_code(alert.id) == wanted:
            return alert
    return None


async def act(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    responder: Responder,
    verb: str,
    now: datetime,
) -> None:
    """Acknowledge or resolve (as safe), exactly as the API does: timeline, webhooks, audit."""
    actor = f"responder:{responder.id}"
    if verb == notices.GROUP_ACK:
        if not await alert_handling.acknowledge(
            session, vault, alert=alert, responder_id=responder.id, now=now, via="chat"
        ):
            return  # a colleague was first: nothing done, nothing audited
        action, detail = "alert.acknowledge", None
    else:
        if not await alert_handling.resolve(
            session, vault, alert=alert, outcome="safe", actor=actor, now=now, via="chat"
        ):
            return  # resolved meanwhile: nothing done, nothing audited
        action, detail = "alert.resolve", {"outcome": "safe"}
    await audit.record(
        session,
        vault,
        actor=actor,
        action=action,
        target=str(alert.id),
        org_id=alert.org_id,
        detail=detail,
        now=now,
    )
