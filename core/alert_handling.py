"""Handling an open alert: acknowledge, keep open, resolve, and the defender's cancel; all in
the caller's transaction.

Each change locks the alert (``alerts.lock``); ``acknowledge``, ``keep_open`` and ``resolve``
return False when another got there first (a colleague, the external desk, a check-in): nothing
done. Resolving tells everyone the alert reached that it is over (``core.follow_ups``) and
withdraws its alarms still waiting (``core.withdrawals``). A duress alert is never cancelled
from the phone.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import (
    actions,
    escalation,
    follow_ups,
    live_locations,
    notices,
    webhook_events,
    withdrawals,
)
from core.alerts import defender_of, lock
from core.crypto import Vault
from core.models import Alert, AlertEvent, AlertKind, AlertState


async def acknowledge(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    responder_id: uuid.UUID | None,
    now: datetime,
    via: str,
    actor: str | None = None,
) -> bool:
    """Stop the repeats; if it is still open after the ack timeout, it triggers again.
    ``via``: "api" (a token), "desk" (a responder in the dashboard) or "chat" (the group).
    ``actor``: who, as the timeline and the audit log write it ("token:<id>" for an API
    token); by default the responder, else ``via``.
    False when the alert was no longer waiting (acknowledged or resolved meanwhile)."""
    alert = await lock(session, alert)
    if alert.state is not AlertState.triggered:
        return False
    alert.state = AlertState.acknowledged
    alert.acknowledged_at, alert.acknowledged_by = now, responder_id
    alert.next_step_at = escalation.ack_deadline(actions.policy(alert), now)
    if actor is None:
        actor = f"responder:{responder_id}" if responder_id else via
    session.add(actions.event(alert, "acknowledged", now, actor=actor, via=via))
    if escalation.desk_told(alert.kind, alert.step):
        defender = await defender_of(session, alert)
        await follow_ups.webhook_event(session, vault, alert, defender, "alert.acknowledged", now)
        await follow_ups.acknowledged(
            session, vault, alert=alert, defender=defender, via=via, now=now
        )
    return True


async def resolve(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    outcome: str,
    actor: str,
    now: datetime,
    via: str | None = None,
) -> bool:
    """Close the alert; everyone who was alerted hears that it is over (the responder group
    too, unless it closed the alert itself: ``via="chat"``). False when it was resolved
    meanwhile (a colleague, the external desk first): nothing done."""
    if not 0 < len(outcome) <= 24:
        raise ValueError("an outcome is 1 to 24 characters")
    alert = await lock(session, alert)
    if alert.state is AlertState.resolved:
        return False
    alert.state, alert.outcome, alert.resolved_at = AlertState.resolved, outcome, now
    alert.open_key, alert.next_step_at = None, None
    alert.location_sealed = None  # a location is kept only while the alert is open (R25)
    await webhook_events.forget_location(session, vault, alert.id)  # and so are its held events'
    session.add(actions.event(alert, "resolved", now, actor=actor, outcome=outcome))
    defender = await defender_of(session, alert)
    await follow_ups.closing(
        session,
        vault,
        alert=alert,
        defender=defender,
        outcome=outcome,
        actor=actor,
        now=now,
        via=via,
    )
    await withdrawals.withdraw_steps(session, alert)  # no alarm may arrive after the all-clear
    if outcome in notices.SAFE_OUTCOMES:  # after withdraw_steps' locks (its docstring)
        await withdrawals.spare_stopped(session, alert)  # a contact's /stop meanwhile
    if actor != "defender":
        # Discreet mode: a live location shared for it is no longer followed: off the phone.
        # Not when the defender calls it off with their PIN: the duress PIN leaves the alert
        # on, and its live location with it, and the phone must show the same (R8).
        await live_locations.alert_closed(
            session, vault, alert_id=alert.id, defender_id=alert.defender_id, now=now
        )
    return True


async def cancel_alert(
    session: AsyncSession, vault: Vault, *, alert: Alert, now: datetime
) -> None:
    """The defender's false alarm. A duress alert is not cancelled (whoever holds the phone
    may be making them), and nothing visible tells them so."""
    if alert.kind is AlertKind.duress:
        await ignore_cancel(session, alert=alert, now=now)
        return
    await resolve(session, vault, alert=alert, outcome="false_alarm", actor="defender", now=now)


async def ignore_cancel(session: AsyncSession, *, alert: Alert, now: datetime) -> None:
    """The phone "called off" the alert with the duress PIN (or a duress alert): it stays
    on, the desk's timeline says so, and the phone must never show otherwise (R8)."""
    alert = await lock(session, alert)
    session.add(actions.event(alert, "cancel_ignored", now, actor="defender"))


async def cancel_ignored(session: AsyncSession, alert: Alert) -> bool:
    """Whether the phone was told this alert, still open, was called off (``ignore_cancel``)."""
    stmt = select(AlertEvent.id).where(
        AlertEvent.alert_id == alert.id, AlertEvent.kind == "cancel_ignored"
    )
    return (await session.execute(stmt.limit(1))).first() is not None


async def keep_open(session: AsyncSession, *, alert: Alert, actor: str, now: datetime) -> bool:
    """The desk wants proof of life: a later check-in will not close this alert. ``actor``:
    "responder:<id>", or "token:<id>" for an external desk system (as in the audit log).
    False when it was resolved meanwhile (a check-in, a colleague first): nothing done."""
    alert = await lock(session, alert)
    if alert.state is AlertState.resolved:
        return False
    alert.keep_open = True
    session.add(actions.event(alert, "kept_open", now, actor=actor))
    return True
