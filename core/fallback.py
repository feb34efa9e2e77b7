"""Where a message that cannot be delivered leaves its person (core.delivery records sends).

A permanent failure (a blocked bot, an unregistered Signal user) or a wait longer than the
message's patience falls back to the person's next address, written on the alert's timeline.
A desk notice none of its responder's addresses can carry, or the responder group's post,
goes to another responder, once a step (``another_responder``). When nobody else can be
tried, escalation comes sooner rather than silently waiting: an unreachable contact or
defender brings the alert's desk step (or the missed check-in) forward. A permanent failure
also marks the address blocked (``block``; the desk sees its group's chat so, in the API),
and a changed Signal safety number alerts the desk (``identity_changed``, R6).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import actions, alerts, escalation, notices, outbox, recipients, wakeup, withdrawals
from core.claims import locked
from core.crypto import Vault
from core.messages import Outbound
from core.models import (
    Alert,
    AlertEvent,
    AlertKind,
    AlertState,
    ChannelAddress,
    CheckIn,
    CheckInState,
    Defender,
    DefenderStatus,
    OutboxMessage,
    Priority,
)


async def block(session: AsyncSession, row: OutboxMessage, now: datetime) -> None:
    if row.address_id is not None:
        address = await session.get(ChannelAddress, row.address_id)
        if address is not None:
            address.blocked_at = now


async def identity_changed(
    session: AsyncSession, vault: Vault, row: OutboxMessage, now: datetime
) -> None:
    """R6: a defender's safety number changed. A new phone, or their number re-registered by
    whoever holds their SIM: the desk is alerted (flagged do-not-contact) to verify it is
    them another way before the new key is trusted (signal-cli's identities API)."""
    address = None if row.address_id is None else await session.get(ChannelAddress, row.address_id)
    if address is None or address.defender_id is None:
        return
    defender = await session.get(Defender, address.defender_id)
    if defender is not None and defender.status is not DefenderStatus.deleted:
        await alerts.raise_alert(
            session, vault, defender=defender, kind=AlertKind.identity_changed, now=now
        )


def alert_event(
    alert_id: uuid.UUID, kind: str, now: datetime, detail: Mapping[str, object]
) -> AlertEvent:
    return AlertEvent(alert_id=alert_id, at=now, kind=kind, actor="engine", detail=dict(detail))


async def fallback(
    session: AsyncSession,
    vault: Vault,
    row: OutboxMessage,
    message: Outbound | None,
    reason: str | None,
    now: datetime,
    *,
    last: bool,
) -> bool:
    """Queue ``message`` to the person's next untried address; True if there was one. With
    ``last`` (nothing more will be tried for this row) an unreachable person escalates."""
    address = None if row.address_id is None else await session.get(ChannelAddress, row.address_id)
    stem = row.idempotency_key.split("|", 1)[0]
    if address is None or message is None:
        others: list[ChannelAddress] = []
    else:
        sparing = await spared(session, row)
        others = await recipients.alternatives(session, address, sparing=sparing)
    for other in others:  # an address already tried for this message has its key queued
        assert message is not None
        key = f"{stem}|{other.channel}:{other.id.hex}"
        queued = await outbox.enqueue(
            session,
            vault,
            to=other,
            message=message,
            priority=Priority(row.priority),
            key=key,
            now=now,
            alert_id=row.alert_id,
            recipient=row.recipient,
        )
        if queued is None:
            continue
        if row.alert_id is not None:
            detail = {"outbox": str(row.id), "from": row.channel, "to": other.channel}
            detail["reason"] = str(reason)
            session.add(alert_event(row.alert_id, "delivery_fallback", now, detail))
        return True
    if last and await another_responder(session, vault, row, message, reason, now):
        return True
    if last:
        await unreachable(session, row, now)
    return False


async def spared(session: AsyncSession, row: OutboxMessage) -> uuid.UUID | None:
    """The defender under duress none of whose chats a desk notice may fall back to (one that
    is also a responder's would put "do not contact the device" on the device)."""
    if row.alert_id is None or row.recipient != "responder":
        return None
    alert = await session.get(Alert, row.alert_id)
    return alert.defender_id if alert is not None and alert.do_not_contact else None


async def another_responder(
    session: AsyncSession,
    vault: Vault,
    row: OutboxMessage,
    message: Outbound | None,
    reason: str | None,
    now: datetime,
) -> bool:
    """A ladder step's desk notice its responder cannot get on any address goes to another
    responder (R27: a blocked bot escalates); True if someone was left to page. So does the
    responder group's post (the bot removed from the group, the group deleted), as the plain
    desk notice: the group's buttons and reply commands work in the group alone."""
    if row.recipient not in ("responder", "group") or row.alert_id is None or message is None:
        return False
    if not withdrawals.step_notice(row.idempotency_key):  # an all-clear: only for who was alerted
        return False
    alert = await session.get(Alert, row.alert_id, populate_existing=True)
    if alert is None or alert.state is AlertState.resolved:
        return False
    stem = row.idempotency_key.split("|", 1)[0].rsplit(":", 2)[0]  # a:<alert>:<step>
    if row.recipient == "group":
        message = await for_responders(session, alert, stem, now) or notices.group_base(
            message, row.channel
        )
    page = actions.page_instead
    who = await page(
        session, vault, alert=alert, stem=stem, message=message, now=now, failing=row.id
    )
    if who is None:
        return False
    detail = {"outbox": str(row.id), "from": row.channel, "to": who.channel}
    detail.update(reason=str(reason), recipient=who.role, failed=str(row.recipient))
    session.add(alert_event(alert.id, "delivery_fallback", now, detail))
    return True


async def for_responders(
    session: AsyncSession, alert: Alert, stem: str, now: datetime
) -> Outbound | None:
    """A step's desk notice (``stem``: ``a:<alert>:<step>``) as the ladder writes it for a
    responder: the responder group's post is in the group's language, responders' notices in
    the desk's (recipients.DESK_LOCALE). None if the step is not on the timeline."""
    step = int(stem.rsplit(":", 1)[1])
    stmt = select(AlertEvent.detail).where(
        AlertEvent.alert_id == alert.id, AlertEvent.kind == "step"
    )
    reasons = [d["reason"] for (d,) in await session.execute(stmt) if d and d.get("step") == step]
    defender = await session.get(Defender, alert.defender_id)
    if not reasons or defender is None:
        return None
    return actions.desk_message(alert, reasons[-1], recipients.DESK_LOCALE, defender, now)


async def escalated(session: AsyncSession, row: OutboxMessage) -> bool:
    """Whether ``row``'s failure already fell back or escalated (its alert's timeline says)."""
    stmt = select(AlertEvent.detail).where(
        AlertEvent.alert_id == row.alert_id,
        AlertEvent.kind.in_(("delivery_fallback", "recipient_unreachable")),
    )
    return any(d.get("outbox") == str(row.id) for (d,) in await session.execute(stmt) if d)


async def unreachable(session: AsyncSession, row: OutboxMessage, now: datetime) -> None:
    if row.alert_id is not None:
        detail = {"outbox": str(row.id), "recipient": row.recipient}
        session.add(alert_event(row.alert_id, "recipient_unreachable", now, detail))
        if row.recipient in ("contact", "defender"):
            await desk_sooner(session, row.alert_id, now)
    elif row.recipient == "defender" and row.idempotency_key.startswith("c:"):
        await miss_sooner(session, uuid.UUID(hex=row.idempotency_key.split(":")[1]), now)


async def desk_sooner(session: AsyncSession, alert_id: uuid.UUID, now: datetime) -> None:
    stmt = select(Alert).where(Alert.id == alert_id).execution_options(populate_existing=True)
    alert = (await session.execute(locked(stmt, session))).scalar_one_or_none()
    if alert is None or alert.state is not AlertState.triggered:
        return
    if escalation.desk_told(alert.kind, alert.step) or alert.next_step_at is None:
        return
    if alert.next_step_at > now:
        alert.next_step_at, alert.version = now, alert.version + 1
        alert.lease_owner, alert.lease_until = None, None
        session.add(actions.event(alert, "desk_brought_forward", now))
        wakeup.touch(session, wakeup.TIMERS, now)


async def miss_sooner(session: AsyncSession, checkin_id: uuid.UUID, now: datetime) -> None:
    """The defender cannot get their reminder: the grace they cannot use is cut short.
    A check-in another transaction holds (the defender checking in or pausing, the sweep
    stepping it) is left as it is: it is being acted on, and its grace ends anyway. Waited
    for, it would deadlock: the dispatcher comes here holding alerts (core.delivery), and
    the check-in's writers lock it before its alert (core.checkins); PostgreSQL would abort
    one of them, the dispatcher's batch of messages then held back for its lease."""
    stmt = (
        select(CheckIn).where(CheckIn.id == checkin_id).execution_options(populate_existing=True)
    )
    row = (await session.execute(locked(stmt, session, skip=True))).scalar_one_or_none()
    if row is None or row.state is not CheckInState.reminded or row.next_action_at <= now:
        return
    # Only this occurrence is missed sooner: the routine's grace (grace_s) stays as it is.
    row.next_action_at, row.version = now, row.version + 1
    row.lease_owner, row.lease_until = None, None
    wakeup.touch(session, wakeup.TIMERS, now)
