"""What the defender adds to an open alert: a location (sealed to the organisation's key) or a
note; in the caller's transaction.

Either pages whoever the alert's desk step pages, once that step is taken (``_tell_desk``), with
a notice naming only the defender's handle: never where they are, nor what they wrote. Later
edits of a live location shared for the alert (``shared_live``) update it without a page.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import actions, escalation, notices, recipients
from core.alerts import defender_of, lock
from core.crypto import Vault, seal
from core.messages import Outbound
from core.models import Alert, AlertEvent, AlertState, Organisation
from core.outbox import enqueue_many


def _spared(alert: Alert) -> uuid.UUID | None:
    """The defender whose own chats a desk notice must skip (duress: do not contact)."""
    return alert.defender_id if alert.do_not_contact else None


async def add_location(
    session: AsyncSession,
    vault: Vault,
    *,
    alert: Alert,
    latitude: float,
    longitude: float,
    now: datetime,
    shared: str | None = None,
    update: bool = False,
) -> None:
    """Seal the location to the organisation's key (the server cannot read it back).
    ``shared``: the chat message of a live location shared for this alert, whose later
    edits (``update``: an update of it) may feed it; updates tell the desk nothing new."""
    alert = await lock(session, alert)
    org = await session.get(Organisation, alert.org_id)
    if org is None or org.public_key is None:  # never stored in clear: dropped, and said so
        session.add(actions.event(alert, "location_unavailable", now, actor="defender"))
        return
    body = {"latitude": latitude, "longitude": longitude, "at": now.isoformat()}
    alert.location_sealed = seal(
        org.public_key, org_id=org.id, record_id=alert.id, kind="alert_location", body=body
    )
    if update:
        return  # live: every few seconds; the desk was told when it was shared
    detail = {} if shared is None else {"live_message": shared}
    session.add(actions.event(alert, "location_added", now, actor="defender", **detail))
    await _tell_desk(session, vault, alert, f"loc{alert.version}", notices.desk_location, now)


async def note_added(session: AsyncSession, vault: Vault, *, alert: Alert, now: datetime) -> None:
    """The defender wrote something for their open alert (``flows.panic.told``, sealed as a
    note): the desk is told as of a location shared, and never what it says."""
    alert = await lock(session, alert)
    await _tell_desk(session, vault, alert, f"note{alert.version}", notices.desk_note, now)


async def _tell_desk(
    session: AsyncSession,
    vault: Vault,
    alert: Alert,
    stem: str,
    notice: Callable[[str, str], Outbound],
    now: datetime,
) -> None:
    """A notice naming only the defender's handle, to whoever the alert's desk step pages
    (``recipients.desk``; a duress alert spares the defender's own chats), at the alert's
    priority, once that step is taken and while the alert is open. ``stem``: one per change
    (the alert's version after ``lock``)."""
    if not escalation.desk_told(alert.kind, alert.step) or alert.state is AlertState.resolved:
        return
    defender = await defender_of(session, alert)
    items = [
        actions.item(f"a:{alert.id.hex}:{stem}", who, notice(who.locale, defender.handle), alert)
        for who in await recipients.desk(session, alert.org_id, sparing=_spared(alert))
    ]
    await enqueue_many(session, vault, items, now=now)


async def shared_live(session: AsyncSession, alert: Alert, message: str | None) -> bool:
    """Whether ``message`` is a live location the defender shared for this alert (R13: a
    location is given per alert; one shared for a report or an earlier alert stays there)."""
    if message is None:
        return False
    stmt = select(AlertEvent.detail).where(
        AlertEvent.alert_id == alert.id, AlertEvent.kind == "location_added"
    )
    return any(d.get("live_message") == message for d in (await session.execute(stmt)).scalars())
