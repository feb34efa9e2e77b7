"""Who an alert reached (``alerted``), and what they hear when it is acknowledged or closes;
in the caller's transaction.

The responder group is told an alert it was shown is acknowledged (``acknowledged``); when the
alert closes, everyone it reached hears that it is over (``closing``: the contacts only when
the person is safe), and the external desk gets the webhook events of either. Keys as in
``core.actions``: ``a:<alert>:ack<version>``, ``a:<alert>:closed<version>``,
``a:<alert>:v<version>`` (a webhook event).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import notices, recipients, webhook_events, webhooks
from core.actions import REACHING, item, key_person, wary
from core.crypto import Vault
from core.escalation import desk_told
from core.models import Alert, Consent, Defender, OutboxMessage, TrustedContact
from core.outbox import Item, enqueue_many
from core.recipients import Recipient

Parties = dict[str, set[uuid.UUID]]


async def alerted(session: AsyncSession, alert: Alert) -> Parties:
    """The contacts, responders and responder group (by its organisation's id) a message of
    this alert reached or is still trying to."""
    stmt = select(OutboxMessage.idempotency_key).where(
        OutboxMessage.alert_id == alert.id, OutboxMessage.state.in_(REACHING)
    )
    found: Parties = {"contact": set(), "responder": set(), "group": set()}
    for (k,) in (await session.execute(stmt)).all():
        person = key_person(k)
        if person is not None and person[0] in found:
            found[person[0]].add(person[1])
    return found


async def forgotten_contacts(
    session: AsyncSession, alert: Alert, defender: Defender, alerted: set[uuid.UUID]
) -> list[Recipient]:
    """Contacts this alert reached who are no longer the defender's: removed by the defender
    since, or their records gone with the defender's deleted data. They are still owed the
    all-clear, at the address the alert reached them at (a removed one is no longer linked
    to a chat). Not one who asked to stop (``Consent.revoked``): they hear nothing more."""
    if not alerted:
        return []
    listed = select(TrustedContact.id, TrustedContact.consent, TrustedContact.locale)
    rows = (await session.execute(listed.where(TrustedContact.id.in_(alerted)))).all()
    gone = alerted - {cid for cid, consent, _locale in rows if consent is not Consent.removed}
    if not gone:
        return []
    locales = {cid: locale for cid, _consent, locale in rows if locale}
    stmt = select(
        OutboxMessage.idempotency_key, OutboxMessage.address_id, OutboxMessage.channel
    ).where(
        OutboxMessage.alert_id == alert.id,
        OutboxMessage.recipient == "contact",
        OutboxMessage.address_id.is_not(None),
    )
    found: dict[uuid.UUID, Recipient] = {}
    for k, address_id, channel in (await session.execute(stmt)).all():
        person = key_person(k)
        if person is not None and person[1] in gone and address_id is not None:
            locale = locales.get(person[1], defender.locale)
            found[person[1]] = Recipient("contact", person[1], address_id, channel, locale)
    return list(found.values())


def origin(actor: str) -> str:
    """Where a change came from, as the responder group is told: "defender", "api" (a token:
    the desk API) or "desk" (a responder in the dashboard)."""
    if actor == "defender":
        return "defender"
    return "api" if actor.startswith("token:") else "desk"


async def told_group(session: AsyncSession, alert: Alert, parties: Parties) -> Recipient | None:
    """The responder group, if a post about this alert went to it: an alert raised before
    the group was linked is not news there, nor one shown to the group linked before (the
    desk moved to another chat, perhaps because that one was no longer safe: it is told
    nothing more either)."""
    if alert.org_id not in parties["group"]:
        return None
    group = await recipients.desk_group(session, alert.org_id)
    if group is None:
        return None
    posted = select(OutboxMessage.id).where(  # as ``alerted`` counts, at this group's chat
        OutboxMessage.alert_id == alert.id,
        OutboxMessage.recipient == "group",
        OutboxMessage.address_id == group.address_id,
        OutboxMessage.state.in_(REACHING),
    )
    return group if (await session.execute(posted.limit(1))).first() is not None else None


async def acknowledged(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    defender: Defender,
    via: str,
    now: datetime,
) -> None:
    """Tell the responder group an alert it was shown is acknowledged, unless the group did
    it (it already has its own confirmation)."""
    if via == "chat":
        return
    group = await told_group(session, alert, await alerted(session, alert))
    if group is None:
        return
    by = "api" if via == "api" else "desk"
    msg = notices.group_acknowledged(
        group.locale, group.channel, alert_id=alert.id, handle=defender.handle, by=by
    )
    stem = f"a:{alert.id.hex}:ack{alert.version}"
    await enqueue_many(session, vault, [item(stem, group, msg, alert)], now=now)


async def closing(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    defender: Defender,
    outcome: str,
    actor: str,
    now: datetime,
    via: str | None = None,
) -> None:
    """Tell everyone who was alerted that it is over; contacts only when the person is safe;
    the responder group unless the group itself closed it (``via="chat"``)."""
    wary(alert, defender)
    parties = await alerted(session, alert)
    stem = f"a:{alert.id.hex}:closed{alert.version}"
    items: list[Item] = []
    if outcome in notices.SAFE_OUTCOMES:
        told = await recipients.contacts(session, defender, only=parties["contact"])
        told += await forgotten_contacts(session, alert, defender, parties["contact"])
        for who in told:
            msg = notices.contact_all_clear(who.locale, defender.handle)
            items.append(item(stem, who, msg, alert))
    by = origin(actor)
    sparing = alert.defender_id if alert.do_not_contact else None  # never the device
    for who in await recipients.responders(session, parties["responder"], sparing=sparing):
        msg = notices.desk_closed(
            who.locale, defender.handle, outcome, by_defender=by == "defender"
        )
        items.append(item(stem, who, msg, alert))
    group = None if via == "chat" else await told_group(session, alert, parties)
    if group is not None:
        msg = notices.group_resolved(
            group.locale, alert_id=alert.id, handle=defender.handle, by=by, outcome=outcome
        )
        items.append(item(stem, group, msg, alert))
    if desk_told(alert.kind, alert.step):
        hooks = await webhooks.endpoints(session, alert.org_id)
        items.extend(
            webhook_events.event_items(
                alert,
                hooks,
                handle=defender.handle,
                event_type="alert.resolved",
                stem=stem,
                known=await _known(session, alert, given_up=True),
            )
        )
    await enqueue_many(session, vault, items, now=now)


async def webhook_event(
    session: AsyncSession,
    vault: Vault,
    alert: Alert,
    defender: Defender,
    event_type: str,
    now: datetime,
) -> None:
    stem = f"a:{alert.id.hex}:v{alert.version}"
    hooks = await webhooks.endpoints(session, alert.org_id)
    known = await _known(session, alert)
    items = webhook_events.event_items(
        alert, hooks, handle=defender.handle, event_type=event_type, stem=stem, known=known
    )
    await enqueue_many(session, vault, items, now=now)


async def _known(session: AsyncSession, alert: Alert, *, given_up: bool = False) -> set[uuid.UUID]:
    """The endpoints that heard of this alert (its ``alert.triggered`` was queued to them and,
    unless ``given_up``, not given up on: ``webhook_events.introduced``)."""
    found = await webhook_events.introduced(session, [alert.id], given_up=given_up)
    return {hook_id for _a, hook_id in found}
