"""Trusted contacts: invited by a one-time code, counted only once they confirm in the bot.

The defender's name for a contact (``label``) is encrypted and never shown back (R7): a
defender removes a contact by typing the name they gave it, so nothing lists them.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import outbox
from core.actions import REACHING, key_person
from core.claims import write_lock
from core.crypto import Vault
from core.defenders import code_index, create_invite, take_invite
from core.models import (
    Alert,
    ChannelAddress,
    Consent,
    Defender,
    InviteCode,
    OutboxMessage,
    TrustedContact,
)
from core.text import fold

PURPOSE = "contact"
MAX_CONTACTS = 10
# A defender-settings key: contacts "removed" under duress (still alerted, no longer counted
# on screen, flows.settings), so that nothing shows the removal was not real.
HIDDEN = "hidden_contacts"


# Contacts someone may be (and who a defender sees as invited or confirmed): a shadow one,
# added under duress, is never told anything (core.recipients selects confirmed ones only).
LIVE = (Consent.invited, Consent.confirmed, Consent.shadow)


async def invite(
    session: AsyncSession,
    vault: Vault,
    *,
    defender: Defender,
    label: str,
    now: datetime,
    shadow: bool = False,
) -> str:
    """A new invited contact; returns the code the defender hands over (shown once).
    ``shadow`` (added under duress): the same code and answers, but never notified."""
    row, code = await create_invite(
        session, vault, org_id=defender.org_id, purpose=PURPOSE, now=now
    )
    contact = TrustedContact(
        id=uuid.uuid4(),
        defender_id=defender.id,
        invite_index=row.code_index,
        consent=Consent.shadow if shadow else Consent.invited,
    )
    contact.put(vault, "label_enc", label)
    session.add(contact)
    return code


async def find_invited(
    session: AsyncSession, vault: Vault, *, code: str, now: datetime
) -> TrustedContact | None:
    """The contact a still-valid code invites (nothing is consumed yet)."""
    index = code_index(vault, PURPOSE, code)
    query = (
        select(TrustedContact)
        .join(InviteCode, InviteCode.code_index == TrustedContact.invite_index)
        .where(
            TrustedContact.invite_index == index,
            TrustedContact.consent.in_([Consent.invited, Consent.shadow]),
            InviteCode.purpose == PURPOSE,
            InviteCode.used_at.is_(None),
            InviteCode.revoked_at.is_(None),
            InviteCode.expires_at > now,
        )
    )
    return (await session.execute(query)).scalar_one_or_none()


async def answer(
    session: AsyncSession,
    vault: Vault,
    *,
    contact_id: uuid.UUID,
    code: str,
    address: ChannelAddress,
    accept: bool,
    locale: str,
    now: datetime,
) -> TrustedContact | None:
    """Record the contact's yes or no; None if the code was used or expired meanwhile."""
    if await take_invite(session, vault, purpose=PURPOSE, code=code, now=now) is None:
        return None
    contact = await session.get(TrustedContact, contact_id)
    if contact is None or contact.consent not in (Consent.invited, Consent.shadow):
        return None
    if contact.consent is Consent.invited or not accept:  # a shadow one accepting stays so
        contact.consent = Consent.confirmed if accept else Consent.declined
    contact.address_id = address.id if accept else None
    contact.invite_index = None
    contact.responded_at = now
    contact.locale = locale
    return contact


async def counts(
    session: AsyncSession, *, defender_id: uuid.UUID, hidden: Collection[str] = ()
) -> dict[Consent, int]:
    """How many contacts in each state; ``hidden`` (ids as text) are left out of the count.
    A shadow contact counts as what it looks like: confirmed once it answered, else invited."""
    answered = TrustedContact.address_id.is_not(None)
    query = (
        select(TrustedContact.consent, answered, func.count())
        .where(TrustedContact.defender_id == defender_id)
        .group_by(TrustedContact.consent, answered)
    )
    if hidden:
        query = query.where(TrustedContact.id.not_in([uuid.UUID(h) for h in hidden]))
    found = dict.fromkeys(Consent, 0)
    for consent, has_address, n in (await session.execute(query)).all():
        shown = Consent(consent)
        if shown is Consent.shadow:
            shown = Consent.confirmed if has_address else Consent.invited
        found[shown] += n
    return found


async def remove_by_label(
    session: AsyncSession,
    vault: Vault,
    *,
    defender_id: uuid.UUID,
    label: str,
    dry_run: bool = False,
    hidden: Collection[str] = (),
) -> list[str]:
    """Remove the defender's contacts whose name folds equal to ``label``; their ids as text.
    Like a contact who asked to stop, they are no longer linked to their chat nor told
    anything, except the all-clear of an alert they were told of (``Consent.removed``).
    ``dry_run`` finds without revoking (what a duress PIN gets: the same answer, no change);
    ``hidden`` ones (removed under duress before) are not found again."""
    query = select(TrustedContact).where(
        TrustedContact.defender_id == defender_id,
        TrustedContact.consent.in_(LIVE),
    )
    removed = []
    for contact in (await session.execute(query)).scalars():
        name = contact.get_text(vault, "label_enc") or ""
        if str(contact.id) in hidden or fold(name) != fold(label):
            continue
        removed.append(str(contact.id))
        if not dry_run:
            if contact.address_id is not None:
                await _withdraw_alarms(session, contact)
            contact.consent, contact.address_id, contact.invite_index = Consent.removed, None, None
            contact.shred("label_enc")
    return removed


async def _withdraw_alarms(session: AsyncSession, contact: TrustedContact) -> None:
    """A removed contact's alarms not yet sent never go: the defender may have removed them
    for a reason, and they are to hear nothing more. Their all-clears still go: one is owed
    only for an alert that reached them (core.follow_ups.forgotten_contacts)."""
    await outbox.withdraw_waiting(
        session,
        OutboxMessage.address_id == contact.address_id,
        OutboxMessage.recipient == "contact",
        OutboxMessage.idempotency_key.like(f"a:%:contact:{contact.id.hex}|%"),
        OutboxMessage.idempotency_key.not_like("a:%:closed%"),
    )


class Stopped(NamedTuple):
    revoked: int  # contacts recorded as having asked to stop
    # The links this address had (contact id, defender id): their defenders are told.
    links: list[tuple[uuid.UUID, uuid.UUID]]


async def stop(session: AsyncSession, *, address: ChannelAddress, now: datetime) -> Stopped:
    """A contact opts out of everything: every link through this address is revoked, and what
    was queued for them as a contact and has not gone yet never goes. So are the contacts an
    alert reached here who are no longer linked (``owed``): recorded as having asked to stop
    (a bare row for one whose record went with the defender's data, as ``delete_data`` keeps
    one), no all-clear goes to them (core.follow_ups.forgotten_contacts).

    An alert closing at the same moment (PostgreSQL): its all-clear was queued to them if it
    read them before this commits. It locks the contacts' rows (or, for one forgotten, the
    defender's) once it has queued it (``core.withdrawals.spare_stopped``): the update below
    waits for its commit, and what it queued is withdrawn after it; or it waits for this,
    and withdraws its all-clear itself. SQLite: the writer's lock, taken first."""
    await write_lock(session)
    mine = (OutboxMessage.address_id == address.id, OutboxMessage.recipient == "contact")
    await outbox.withdraw_waiting(session, *mine)
    gone = await owed(session, address=address)
    linked = TrustedContact.address_id == address.id
    live = TrustedContact.consent.in_([Consent.confirmed, Consent.shadow])
    links = select(TrustedContact.id, TrustedContact.defender_id).where(linked & live)
    had = [(c, d) for c, d in (await session.execute(links)).all()]
    result = await session.execute(
        update(TrustedContact)
        .where((linked & live) | TrustedContact.id.in_(gone))
        .values(consent=Consent.revoked, address_id=None, responded_at=now)
        .execution_options(synchronize_session=False)
    )
    listed = select(TrustedContact.id).where(TrustedContact.id.in_(gone))
    forgotten = set(gone) - set((await session.execute(listed)).scalars())
    for contact_id in forgotten:
        session.add(
            TrustedContact(
                id=contact_id,
                defender_id=gone[contact_id],
                consent=Consent.revoked,
                responded_at=now,
            )
        )
    await session.flush()  # the bare rows: a closing that holds their defender is waited for
    await outbox.withdraw_waiting(session, *mine)  # an all-clear committed as this waited
    return Stopped(int(getattr(result, "rowcount", 0) or 0) + len(forgotten), had)


async def owed(session: AsyncSession, *, address: ChannelAddress) -> dict[uuid.UUID, uuid.UUID]:
    """Contacts an alert reached at this address (a message of it sent or going) who are no
    longer linked to it, removed by their defender or forgotten with the defender's data, by
    id, with their defender's id: those an all-clear may still go to here. Their /stop used
    to find no contact, and the all-clear went after all."""
    stmt = (
        select(OutboxMessage.idempotency_key, Alert.defender_id)
        .join(Alert, Alert.id == OutboxMessage.alert_id)
        .where(
            OutboxMessage.address_id == address.id,
            OutboxMessage.recipient == "contact",
            OutboxMessage.state.in_(REACHING),
        )
    )
    reached: dict[uuid.UUID, uuid.UUID] = {}
    for key, defender_id in (await session.execute(stmt)).all():
        person = key_person(key)
        if person is not None and person[0] == "contact":
            reached[person[1]] = defender_id
    if reached:
        listed = select(TrustedContact.id).where(
            TrustedContact.id.in_(reached), TrustedContact.consent != Consent.removed
        )
        for contact_id in (await session.execute(listed)).scalars():
            del reached[contact_id]
    return reached


async def is_contact(session: AsyncSession, *, address: ChannelAddress) -> bool:
    query = select(TrustedContact.id).where(
        TrustedContact.address_id == address.id,
        TrustedContact.consent.in_([Consent.confirmed, Consent.shadow]),
    )
    return (await session.execute(query.limit(1))).first() is not None


async def may_stop(session: AsyncSession, *, address: ChannelAddress) -> bool:
    """Whether /stop from this address has anything to stop: a linked contact, or one an
    alert reached here who is still owed its all-clear (``owed``)."""
    return await is_contact(session, address=address) or bool(await owed(session, address=address))
