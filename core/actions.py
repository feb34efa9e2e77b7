"""Carry out an alert's step: outbox rows and timeline lines, in the caller's transaction.

Idempotency keys are ``a:<alert>:<step>:<role>:<person>|<channel>:<address>``: one message per
(alert, step, recipient, channel). A step redone after a crash writes the same keys, and the
fallback to another address keeps the part before ``|``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import notices, outbox, recipients, webhooks
from core.claims import locked
from core.crypto import Vault
from core.escalation import Act, AlertStep, Policy, desk_told
from core.messages import WITHDRAWN, Outbound
from core.models import (
    DO_NOT_CONTACT,
    Alert,
    AlertEvent,
    Consent,
    Defender,
    DefenderStatus,
    OutboxMessage,
    OutboxState,
    TrustedContact,
)
from core.outbox import Item, enqueue_many
from core.recipients import Recipient


def key(stem: str, who: Recipient) -> str:
    return f"{stem}:{who.role}:{who.person.hex}|{who.channel}:{who.address_id.hex}"


def key_person(idempotency_key: str) -> tuple[str, uuid.UUID] | None:
    """(role, person) from a key written by ``key``; None for any other key."""
    parts = idempotency_key.split("|", 1)[0].split(":")
    if len(parts) != 5 or parts[0] != "a":
        return None
    try:
        return parts[3], uuid.UUID(hex=parts[4])
    except ValueError:
        return None


def item(stem: str, who: Recipient, message: Outbound, alert: Alert) -> Item:
    return Item(
        who.channel,
        alert.priority,
        key(stem, who),
        message=message,
        address_id=who.address_id,
        alert_id=alert.id,
        recipient=who.role,
    )


def event(
    alert: Alert, name: str, now: datetime, *, actor: str = "engine", **detail: object
) -> AlertEvent:
    return AlertEvent(alert_id=alert.id, at=now, kind=name, actor=actor, detail=dict(detail))


Step = tuple[Alert, Defender, AlertStep]


async def perform(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    defender: Defender,
    step: AlertStep,
    now: datetime,
) -> None:
    await perform_many(session, vault, [(alert, defender, step)], now=now)


async def perform_many(
    session: AsyncSession, vault: Vault, steps: list[Step], *, now: datetime
) -> None:
    """Write each step's messages and timeline line, and move each alert to its next step.
    Recipients are looked up once for the whole batch (an alert storm is many steps)."""
    for alert, defender, _step in steps:
        wary(alert, defender)
    wants = {act: [(a, d) for a, d, st in steps if act in st.acts] for act in Act}
    mine = [d.id for a, d in wants[Act.remind_again] if not a.do_not_contact]
    addresses = await recipients.defender_addresses(session, mine)
    contacts = await recipients.contacts_of(session, [d for _a, d in wants[Act.notify_contacts]])
    orgs = {a.org_id for a, _d in wants[Act.notify_desk]}
    desks = {org: await recipients.desk(session, org) for org in orgs}
    hooks = {org: await webhooks.endpoints(session, org) for org in orgs}
    # The endpoints each alert the desk was told of before reached (one query for the batch).
    heard: dict[uuid.UUID, set[uuid.UUID]] = {}
    told_before = [a.id for a, _d in wants[Act.notify_desk] if desk_told(a.kind, a.step)]
    for alert_id, hook_id in await webhooks.introduced(session, told_before):
        heard.setdefault(alert_id, set()).add(hook_id)
    items: list[Item] = []
    for alert, defender, step in steps:
        stem = f"a:{alert.id.hex}:{step.step}"
        told: dict[str, object] = {"step": step.step, "reason": step.reason}
        if Act.remind_again in step.acts and not alert.do_not_contact:
            best = addresses.get(defender.id)
            if best is not None:
                me = recipients.Recipient("defender", defender.id, *best, defender.locale)
                msg = notices.second_reminder(me.locale, discreet=defender.discreet)
                items.append(item(stem, me, msg, alert))
            told["defender"] = best is not None
        if Act.notify_contacts in step.acts:
            duress = alert.do_not_contact  # duress, or a hidden defender's alert
            for who in contacts[defender.id]:
                msg = notices.contact_notice(who.locale, defender.handle, duress=duress)
                items.append(item(stem, who, msg, alert))
            told["contacts"] = len(contacts[defender.id])
        if Act.notify_desk in step.acts:
            people = desks[alert.org_id]
            if alert.do_not_contact:  # never the defender's own device, even as a responder's
                people = await recipients.desk(session, alert.org_id, sparing=alert.defender_id)
            for who in people:
                msg = desk_message(alert, step.reason, who.locale, defender, now)
                if who.role == "group":  # the responder group: priority, short code, buttons
                    msg = notices.desk_group(
                        who.locale,
                        who.channel,
                        alert_id=alert.id,
                        priority=alert.priority,
                        base=msg,
                    )
                items.append(item(stem, who, msg, alert))
            # The external desk learns of an alert with "alert.triggered": the first desk
            # step is that, whatever brought it (a missed check-in acknowledged before its
            # desk step reaches the desk first at the ack timeout).
            first = not desk_told(alert.kind, alert.step)
            alert.step, alert.state = step.step, step.state  # as the webhook body reports it
            event_type = "alert.triggered" if first else step.desk_event or "alert.escalated"
            hooked = webhooks.event_items(
                alert,
                hooks[alert.org_id],
                handle=defender.handle,
                event_type=event_type,
                stem=stem,
                known=None if first else heard.get(alert.id, set()),
            )
            items.extend(hooked)
            told.update(responders=len(people), webhooks=len(hooked))
        session.add(
            AlertEvent(alert_id=alert.id, at=now, kind="step", actor="engine", detail=told)
        )
        alert.step, alert.state, alert.next_step_at = step.step, step.state, step.next_step_at
    await enqueue_many(session, vault, items, now=now)


def wary(alert: Alert, defender: Defender) -> None:
    """An alert whose defender was hidden since it opened (a "delete my data" forced with the
    duress PIN: core.defenders.hide) becomes do-not-contact, as one opened after: the desk's
    notices say not to contact the device and skip the defender's own chats. Called with the
    alert being written (a step, its closing)."""
    if defender.status is DefenderStatus.hidden and not alert.do_not_contact:
        alert.do_not_contact = True


def desk_message(
    alert: Alert, reason: str, locale: str, defender: Defender, now: datetime
) -> Outbound:
    """A ladder step's desk notice, for a step taken for ``reason`` (AlertStep.reason)."""
    if reason == "ack_timeout" and alert.acknowledged_at is not None:
        minutes = max(1, round((now - alert.acknowledged_at).total_seconds() / 60))
        return notices.desk_ack_timeout(locale, defender.handle, minutes)
    repeat = reason == "repeat"
    hidden = alert.do_not_contact and alert.kind not in DO_NOT_CONTACT  # those say it already
    return notices.desk_alert(locale, alert.kind, defender.handle, repeat=repeat, hidden=hidden)


Parties = dict[str, set[uuid.UUID]]
# A message in these states reached its person, or is still trying to.
REACHING = (OutboxState.pending, OutboxState.sending, OutboxState.delivered)


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


async def spare_stopped(session: AsyncSession, alert: Alert) -> None:
    """The all-clears ``closing`` queued to contacts who asked to stop meanwhile are withdrawn
    (``core.contacts.stop``, PostgreSQL: ``closing`` may have read them before it committed).
    Their rows are read ``FOR SHARE``: a /stop that updated them first is waited for, and its
    ``revoked`` read here; a /stop after waits for this commit, then withdraws what it queued.
    One forgotten with the defender's data has no row: the defender's is locked instead
    (``FOR UPDATE``), which /stop's bare row for them (its foreign key) waits for, or is
    waited for. Only after ``withdraw_steps``: a /stop holds the alarms it withdrew while it
    waits for these rows, and ``withdraw_steps`` would wait for those (a deadlock)."""
    stmt = select(OutboxMessage.idempotency_key).where(
        OutboxMessage.alert_id == alert.id,
        OutboxMessage.recipient == "contact",
        OutboxMessage.state == OutboxState.pending,
        OutboxMessage.idempotency_key.like(f"a:{alert.id.hex}:closed%"),
    )
    queued: dict[uuid.UUID, list[str]] = {}
    for (k,) in (await session.execute(stmt)).all():
        person = key_person(k)
        if person is not None and person[0] == "contact":
            queued.setdefault(person[1], []).append(k)
    if not queued:
        return
    rows = select(TrustedContact.id, TrustedContact.consent).order_by(TrustedContact.id)
    read = locked(rows.where(TrustedContact.id.in_(queued)), session, read=True)
    found = dict((await session.execute(read)).all())
    if len(found) < len(queued):  # forgotten: wait for a /stop writing their bare row
        me = select(Defender.id).where(Defender.id == alert.defender_id)
        await session.execute(locked(me, session))
        found = dict((await session.execute(read)).all())
    stopped = [k for cid, ks in queued.items() if found.get(cid) is Consent.revoked for k in ks]
    if stopped:
        keys = OutboxMessage.idempotency_key.in_(stopped)
        await outbox.withdraw_waiting(session, OutboxMessage.alert_id == alert.id, keys)


async def withdraw_steps(session: AsyncSession, alert: Alert) -> None:
    """Withdraw the ladder's notices of a closing alert that failed and wait for a retry, once
    the all-clear is queued (to everyone they were meant for): a "may need help" must never
    arrive after "they are safe". So are those a rate limit held back (untried, their next
    attempt moved later than when they were queued): the all-clear, due at once, would go
    first. Notices waiting untried at their first time stay: they go before the all-clear,
    queued after them at the same priority. One being sent now is withdrawn if its send fails
    (``core.delivery.overtaken``). Webhook events are never withdrawn: an external desk gets
    them all.

    The rows are locked (on SQLite the caller holds the write lock: ``alerts.lock``): else a
    dispatcher could claim one between this read and the update, send it, and have it recorded
    as withdrawn. A claim holding one makes this wait, then find it ``sending``: the
    dispatcher's. A row ``sending`` is never waited for: its dispatcher, recording, may be
    waiting for the alert this transaction holds (``core.delivery.overtaken``)."""
    stmt = (
        select(OutboxMessage)
        .where(
            OutboxMessage.alert_id == alert.id,
            OutboxMessage.state == OutboxState.pending,
            (OutboxMessage.attempts > 0)
            | (OutboxMessage.next_attempt_at > OutboxMessage.created_at),
            OutboxMessage.webhook_id.is_(None),
        )
        .order_by(OutboxMessage.id)
    )
    for row in (await session.execute(locked(stmt, session))).scalars():
        if step_notice(row.idempotency_key):
            withdraw(row)


def step_notice(idempotency_key: str) -> bool:
    """A ladder step's notice (``a:<alert>:<step>:…``): an alarm, not an all-clear."""
    stem = idempotency_key.split("|", 1)[0].split(":")
    return len(stem) > 2 and stem[0] == "a" and stem[2].isdigit()


def all_clear(idempotency_key: str) -> bool:
    """An alert's all-clear (``a:<alert>:closed<version>:…``)."""
    stem = idempotency_key.split("|", 1)[0].split(":")
    return len(stem) > 2 and stem[0] == "a" and stem[2].startswith("closed")


async def behind_alarms(session: AsyncSession, rows: list[OutboxMessage]) -> set[uuid.UUID]:
    """The all-clears among ``rows`` (a dispatcher's batch) whose person still has an alarm
    of that alert waiting or being sent by another batch (another worker's: several share
    the queue), at the same address: they wait for it, else "they are safe" could arrive
    before "they may need help". Within one batch the per-person spacing keeps the order.
    Alarms withdrawn at the close (``withdraw_steps``) are not waited for."""
    clears = [r for r in rows if r.alert_id is not None and all_clear(r.idempotency_key)]
    if not clears:
        return set()
    mine = {r.id for r in rows}
    stmt = select(
        OutboxMessage.alert_id, OutboxMessage.address_id, OutboxMessage.idempotency_key
    ).where(
        OutboxMessage.alert_id.in_({r.alert_id for r in clears}),
        OutboxMessage.state.in_((OutboxState.pending, OutboxState.sending)),
        OutboxMessage.id.not_in(mine),
    )
    waiting = {
        (alert_id, address_id)
        for alert_id, address_id, k in (await session.execute(stmt)).all()
        if step_notice(k)
    }
    return {r.id for r in clears if (r.alert_id, r.address_id) in waiting}


def withdraw(row: OutboxMessage) -> None:
    row.state, row.last_error = OutboxState.failed, WITHDRAWN
    row.shred("payload_enc")


async def page_instead(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    stem: str,
    message: Outbound,
    now: datetime,
    failing: uuid.UUID,
) -> Recipient | None:
    """Queue a step's desk notice (``stem``: ``a:<alert>:<step>``), which its responder or the
    responder group cannot get (``failing``), for another responder: one the step has not
    paged yet, reachable and on duty first (``recipients.stand_ins``). None when nobody is
    left, or when the step still reaches the desk another way (another responder's or the
    group's notice, waiting or delivered): an off-duty stand-in is paged only when the desk
    would otherwise not hear."""
    stmt = select(OutboxMessage.id, OutboxMessage.idempotency_key, OutboxMessage.state).where(
        OutboxMessage.alert_id == alert.id, OutboxMessage.recipient.in_(("responder", "group"))
    )
    paged = set()
    for row_id, k, state in (await session.execute(stmt)).all():
        person = key_person(k)
        if person is None or not k.startswith(f"{stem}:"):
            continue
        if row_id != failing and state in REACHING:
            return None
        if person[0] == "responder":
            paged.add(person[1])
    sparing = alert.defender_id if alert.do_not_contact else None
    found = await recipients.stand_ins(session, alert.org_id, besides=paged, sparing=sparing)
    if not found:
        return None
    await enqueue_many(session, vault, [item(stem, found[0], message, alert)], now=now)
    return found[0]


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
            webhooks.event_items(
                alert,
                hooks,
                handle=defender.handle,
                event_type="alert.resolved",
                stem=stem,
                known=await _known(session, alert),
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
    items = webhooks.event_items(
        alert, hooks, handle=defender.handle, event_type=event_type, stem=stem, known=known
    )
    await enqueue_many(session, vault, items, now=now)


async def _known(session: AsyncSession, alert: Alert) -> set[uuid.UUID]:
    """The endpoints that heard of this alert (its ``alert.triggered`` was queued to them)."""
    return {hook_id for _a, hook_id in await webhooks.introduced(session, [alert.id])}


def policy(alert: Alert) -> Policy:
    return Policy.from_json(alert.policy_snapshot)
