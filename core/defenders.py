"""Defenders as the conversations see them: addresses, invite codes, settings, deletion.

Addresses are found through their blind index and stored encrypted. Invite codes are stored
only as blind indexes: a database dump holds no code that could be redeemed.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import handoffs, outbox
from core.claims import locked, write_lock
from core.crypto import Vault
from core.models import (
    GONE,
    BroadcastRecipient,
    CallbackToken,
    ChannelAddress,
    CheckIn,
    CheckInState,
    Consent,
    Conversation,
    Defender,
    DefenderStatus,
    Evidence,
    InviteCode,
    OutboxMessage,
    TrustedContact,
    utcnow,
)
from core.security import generate_code
from core.text import digits

INVITE_TTL = timedelta(days=7)
_ADJECTIVES = "quiet calm bright swift gentle brave steady clear silver green amber north".split()
_ANIMALS = "heron otter lynx finch crane ibis marten wren falcon hare swift badger".split()


def address_index(vault: Vault, channel: str, value: str) -> bytes:
    return vault.address_index(channel, value)


async def index_of(session: AsyncSession, vault: Vault, channel: str, value: str) -> bytes:
    """The address's blind index as its row has it: during ``amparo keys rotate-index`` the
    rows move to the new key in one transaction, which this process learns of within a
    second; meanwhile either may be the one (one more indexed read, only then). The index
    under the key in use when there is no row."""
    first, *others = vault.address_indexes(channel, value)
    if not others:
        return first
    found = await session.scalar(
        select(ChannelAddress.blind_index)
        .where(ChannelAddress.channel == channel, ChannelAddress.blind_index.in_([first, *others]))
        .limit(1)
    )
    return first if found is None else bytes(found)


async def lookup_index(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, channel: str, value: str
) -> bytes:
    """``index_of`` in a session of its own, opened only during a rotation. A database that
    cannot answer gets the index under the key in use (what follows fails the same way)."""
    if len(vault.keyring.address_lookup_keys) == 1:
        return vault.address_index(channel, value)
    try:
        async with sessions() as session:
            return await index_of(session, vault, channel, value)
    except Exception:
        return vault.address_index(channel, value)


async def find_address(session: AsyncSession, channel: str, index: bytes) -> ChannelAddress | None:
    query = select(ChannelAddress).where(
        ChannelAddress.channel == channel, ChannelAddress.blind_index == index
    )
    return (await session.execute(query)).scalar_one_or_none()


async def is_defender(session: AsyncSession, channel: str, index: bytes) -> bool:
    """Whether the address with blind index ``index`` is a defender's whom the bot serves
    (a deleted or hidden one is a stranger to the flows)."""
    known = (
        select(ChannelAddress.id)
        .join(Defender, Defender.id == ChannelAddress.defender_id)
        .where(
            ChannelAddress.channel == channel,
            ChannelAddress.blind_index == index,
            Defender.status.not_in(GONE),
        )
    )
    return (await session.execute(known.limit(1))).first() is not None


def defender_lookup(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, channel: str
) -> Callable[[str], Awaitable[bool]]:
    """``is_defender`` for a channel's raw address, each call in a session of its own."""

    async def known(value: str) -> bool:
        async with sessions() as session:
            index = await index_of(session, vault, channel, value)
            return await is_defender(session, channel, index)

    return known


async def move_address(
    session: AsyncSession, vault: Vault, channel: str, old: bytes, to: str
) -> ChannelAddress | None:
    """The chat with blind index ``old`` now has the id ``to`` (a Telegram group upgraded to a
    supergroup): the same row, so every link and every queued message follows it. None if the
    old chat is unknown or the new id already has a row of its own."""
    found = await find_address(session, channel, old)
    index = address_index(vault, channel, to)
    if found is None or await find_address(session, channel, index) is not None:
        return None
    found.blind_index = index
    found.put(vault, "value_enc", to)
    return found


def new_address(vault: Vault, channel: str, value: str) -> ChannelAddress:
    address = ChannelAddress(
        id=uuid.uuid4(), channel=channel, blind_index=address_index(vault, channel, value)
    )
    address.put(vault, "value_enc", value)
    return address


def code_index(vault: Vault, purpose: str, code: str) -> bytes:
    """Codes are read aloud and retyped: case, spaces, dashes and digit scripts do not matter."""
    typed = "".join(c for c in digits(code) if c not in " -")
    return vault.blind_index(f"invite:{purpose}", typed)


async def create_invite(
    session: AsyncSession,
    vault: Vault,
    *,
    org_id: uuid.UUID,
    purpose: str,
    now: datetime,
    ttl: timedelta = INVITE_TTL,
    created_by: uuid.UUID | None = None,
) -> tuple[InviteCode, str]:
    """A single-use code (shown once) and its row, which keeps only the code's blind index."""
    code = generate_code(8)
    invite = InviteCode(
        id=uuid.uuid4(),
        org_id=org_id,
        code_index=code_index(vault, purpose, code),
        purpose=purpose,
        expires_at=now + ttl,
        created_by=created_by,
    )
    session.add(invite)
    return invite, code


async def take_invite(
    session: AsyncSession, vault: Vault, *, purpose: str, code: str, now: datetime
) -> InviteCode | None:
    """Mark the invite used and return it; None if unknown, expired, revoked or used."""
    index = code_index(vault, purpose, code)
    claimed = await session.execute(
        update(InviteCode)
        .where(
            InviteCode.code_index == index,
            InviteCode.purpose == purpose,
            InviteCode.used_at.is_(None),
            InviteCode.revoked_at.is_(None),
            InviteCode.expires_at > now,
        )
        .values(used_at=now)
        .returning(InviteCode.id)
    )
    invite_id = claimed.scalar_one_or_none()
    return None if invite_id is None else await session.get(InviteCode, invite_id)


async def new_handle(session: AsyncSession) -> str:
    while True:
        handle = "-".join(
            (
                secrets.choice(_ADJECTIVES),
                secrets.choice(_ANIMALS),
                str(secrets.randbelow(9000) + 1000),
            )
        )
        if (await session.execute(select(Defender.id).where(Defender.handle == handle))).first():
            continue
        return handle


async def enrol(
    session: AsyncSession, *, invite: InviteCode, address: ChannelAddress, locale: str
) -> Defender:
    """A new defender of the invite's organisation, reached at ``address``."""
    defender = Defender(
        id=uuid.uuid4(),
        org_id=invite.org_id,
        handle=await new_handle(session),
        locale=locale,
        status=DefenderStatus.onboarding,
    )
    session.add(defender)
    await session.flush()
    address.defender_id = defender.id
    return defender


def settings(vault: Vault, defender: Defender) -> dict[str, Any]:
    raw = defender.get_text(vault, "settings_enc")
    return {} if raw is None else dict(json.loads(raw))


def save_settings(vault: Vault, defender: Defender, values: dict[str, Any]) -> None:
    clean = {k: v for k, v in values.items() if v is not None}
    defender.put(vault, "settings_enc", json.dumps(clean, ensure_ascii=False) if clean else None)


async def delete_data(session: AsyncSession, *, defender: Defender) -> None:
    """Forget the defender: PINs, settings, contacts, check-ins, roll-call answers,
    conversation, addresses, and the files of a report not sent (what was sent stays
    with the desk, as the bot says).

    The row itself stays as a bare handle so the desk's alerts and reports keep a subject;
    addresses are detached rather than deleted, so the final reply can still be delivered.
    """
    await withdraw_waiting(session, defender)
    await handoffs.withdraw_for(session, defender.id, utcnow())  # no case left to hand on
    await session.execute(delete(CheckIn).where(CheckIn.defender_id == defender.id))
    theirs = TrustedContact.defender_id == defender.id
    # Locked by id first: the order an alert closing reads them in
    # (core.withdrawals.spare_stopped); a DELETE locks them as it finds them, and each could
    # hold a row the other waits for.
    mine = select(TrustedContact.id).where(theirs).order_by(TrustedContact.id)
    await session.execute(locked(mine, session))
    # One who asked to stop stays, bare (no name, no address, no invite): gone, it would be
    # taken for a contact the deletion forgot, owed the all-clear of an alert that had
    # reached them (core.follow_ups.forgotten_contacts), and told after all.
    stopped = TrustedContact.consent == Consent.revoked
    await session.execute(delete(TrustedContact).where(theirs, ~stopped))
    await session.execute(
        update(TrustedContact)
        .where(theirs, stopped)
        .values(label_enc=None, dek=None, invite_index=None, address_id=None)
    )
    await session.execute(delete(Conversation).where(Conversation.defender_id == defender.id))
    unsent = Evidence.defender_id == defender.id, Evidence.filed_at.is_(None)
    await session.execute(delete(Evidence).where(*unsent))
    # Their roll-call answers: like check-ins, no record of when they said they were safe.
    await session.execute(
        delete(BroadcastRecipient).where(BroadcastRecipient.defender_id == defender.id)
    )
    await forget_buttons(session, defender)
    await session.execute(
        update(ChannelAddress)
        .where(ChannelAddress.defender_id == defender.id)
        .values(defender_id=None)
    )
    defender.shred("settings_enc")
    defender.cancel_pin_hash = defender.duress_pin_hash = None
    defender.status = DefenderStatus.deleted
    defender.discreet = False
    defender.last_checkin_at = None
    defender.timezone = "UTC"  # in clear for the sweep's SQL, and it names a city


async def withdraw_waiting(session: AsyncSession, defender: Defender) -> None:
    """Messages to the defender's chats still waiting to go (a reminder, an alert's "you have
    not confirmed"), at a deletion, real or forced (``hide``: they would tell the phone it was
    not deleted): withdrawn, their text shredded. One being sent now is marked so, and
    withdrawn if its send fails (``core.delivery.record``): never retried nor sent elsewhere.
    The deletion's own reply is queued after. Discreet mode's deletions stay as they were
    (core.discreet)."""
    await _hold_checkins(session, defender)
    chats = select(ChannelAddress.id).where(ChannelAddress.defender_id == defender.id)
    theirs = (
        OutboxMessage.address_id.in_(chats),
        OutboxMessage.recipient == "defender",
        OutboxMessage.idempotency_key.not_like("del:%"),
    )
    await outbox.withdraw_waiting(session, *theirs)


async def _hold_checkins(session: AsyncSession, defender: Defender) -> None:
    """Lock the defender's live check-ins (core.checkins' order: the defender's row, then its
    check-ins by due time and id). A sweep stepping one of them (PostgreSQL: it holds the row
    until its commit) is waited for, so the reminder it writes is withdrawn with the rest,
    not sent to the phone after the deletion; a later sweep finds the defender deleted (or
    hidden) and sends them nothing. SQLite: the writer's lock, which the sweep takes first."""
    await write_lock(session)
    me = select(Defender.id).where(Defender.id == defender.id)
    await session.execute(locked(me, session, key_share=True))
    live = CheckIn.state.in_((CheckInState.armed, CheckInState.reminded))
    rows = select(CheckIn.id).where(CheckIn.defender_id == defender.id, live)
    await session.execute(locked(rows.order_by(CheckIn.due_at, CheckIn.id), session))


async def forget_buttons(session: AsyncSession, defender: Defender) -> None:
    """The buttons sent to the defender's chats: each row names its chat by the address's
    blind index, and may outlast the address (24 hours; an alert button stored before they
    were derived, 30 days). The alert button itself is derived from the chat, not stored: on
    an old menu it still reaches the flows, which answer it as they answer /sos there."""
    chats = select(ChannelAddress.blind_index).where(ChannelAddress.defender_id == defender.id)
    await session.execute(delete(CallbackToken).where(CallbackToken.chat_index.in_(chats)))


async def hide(session: AsyncSession, *, defender: Defender) -> None:
    """A "delete my data" forced with the duress PIN: nothing the desk needs is deleted, but
    the phone must not tell (R8). The bot answers the defender's chats as it answers them
    after a real deletion (a stranger's; old buttons no longer work, their tokens go as in
    ``delete_data``), sends them nothing (core.recipients), deletes nothing there after the
    fact (core.discreet), and an alert command or code phrase typed there, or an old menu's
    alert button pressed, still raises a silent alert (flows.router: the phone sees what a
    real deletion's would, a stranger's answer). Check-ins keep running, so a
    missed one still escalates (never to the phone). A responder restores the defender
    (core.desk_defenders.restore) once they are safe.
    """
    await session.execute(delete(Conversation).where(Conversation.defender_id == defender.id))
    await forget_buttons(session, defender)  # old buttons answer as after a real deletion
    await withdraw_waiting(session, defender)  # as a real deletion does
    defender.status = DefenderStatus.hidden
