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

from core import notices, recipients, webhook_events, webhooks
from core.crypto import Vault
from core.escalation import Act, AlertStep, Policy, desk_told
from core.messages import Outbound
from core.models import (
    DO_NOT_CONTACT,
    Alert,
    AlertEvent,
    Defender,
    DefenderStatus,
    OutboxMessage,
    OutboxState,
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
    for alert_id, hook_id in await webhook_events.introduced(session, told_before):
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
            hooked = webhook_events.event_items(
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
    careful = alert.do_not_contact and alert.kind not in DO_NOT_CONTACT  # those say it already
    hidden = careful and defender.status is DefenderStatus.hidden
    return notices.desk_alert(
        locale,
        alert.kind,
        defender.handle,
        repeat=repeat,
        hidden=hidden,
        careful=careful and not hidden,
    )


# A message in these states reached its person, or is still trying to.
REACHING = (OutboxState.pending, OutboxState.sending, OutboxState.delivered)


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


def policy(alert: Alert) -> Policy:
    return Policy.from_json(alert.policy_snapshot)
