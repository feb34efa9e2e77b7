"""Retention per data class (SECURITY.md R25): what is kept, for how long, and the purge.

| data class                                   | kept                                    |
|----------------------------------------------|-----------------------------------------|
| an alert's location (sealed)                 | while the alert is open                 |
| the same in its webhook events still held    | while the alert is open (taken out at   |
| (waiting, or dead and replayable)            | its end: core.webhook_events            |
|                                              | .forget_location)                       |
| outbox rows delivered, failed or dead        | 30 days, and while their alert is open  |
| desk sessions                                | until they expire or are revoked        |
| invite codes used, revoked or expired        | 30 days, then the code's index goes     |
| button tokens                                | until they expire (24 h; alert: 30 days)|
| addresses nobody owns or refers to any more  | 1 day (a deleted defender's chat id)    |
| check-ins met or cancelled                   | 1 day after they were due (R24: only the|
|                                              | defender's last check-in time stays)    |
| check-ins missed                             | the same, and while an alert of the     |
|                                              | defender is open                        |
| broadcasts and roll-calls (text, recipients, | 30 days (a roll-call: from its closing; |
| answers)                                     | R24: no lasting record of answers)      |

Alerts, their timelines, reports and the audit log are the desk's case record and stay.
``purge`` is idempotent and safe to run from several workers at once: every statement is a
plain conditional UPDATE or DELETE.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Table, and_, delete, exists, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import (
    Alert,
    AlertState,
    Base,
    Broadcast,
    CallbackToken,
    ChannelAddress,
    CheckIn,
    CheckInState,
    DeskSession,
    InviteCode,
    OutboxMessage,
    OutboxState,
)

OUTBOX_KEPT = timedelta(days=30)
INVITES_KEPT = timedelta(days=30)
ORPHANS_KEPT = timedelta(days=1)
CHECKINS_KEPT = timedelta(days=1)
BROADCASTS_KEPT = timedelta(days=30)
_FINAL = (OutboxState.delivered, OutboxState.failed, OutboxState.dead)
_ENDED = (CheckInState.met, CheckInState.cancelled, CheckInState.missed)


# Reads only the alerts still holding a location (their own partial index), however many
# are kept. SQLite's planner has no statistics and would take ix_alerts_due (state) instead:
# there the index is named (an error, not a slow scan, if it were ever missing).
_FORGET_LOCATIONS = (
    update(Alert)
    .where(Alert.state == AlertState.resolved, Alert.location_sealed.is_not(None))
    .values(location_sealed=None)
)
_FORGET_LOCATIONS_SQLITE = text(
    "UPDATE alerts INDEXED BY ix_alerts_located SET location_sealed = NULL "
    "WHERE state = :state AND location_sealed IS NOT NULL"
).bindparams(state=AlertState.resolved.name)  # the stored form of the enum: its name


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _unowned() -> list[ColumnElement[bool]]:
    """Every owner column of the address (defender, responder, or any added later) is empty."""
    table = ChannelAddress.__table__
    return [fk.parent.is_(None) for fk in table.foreign_keys]


def _unreferenced() -> list[ColumnElement[bool]]:
    """No row of any table points at the address (found from the metadata, so a table added
    later is covered without touching this module); outbox rows count only while undelivered."""
    conditions: list[ColumnElement[bool]] = []
    addresses = ChannelAddress.__table__
    for table in Base.metadata.tables.values():
        for fk in table.foreign_keys:
            if fk.column.table is not addresses or not isinstance(table, Table):
                continue
            ref = fk.parent == ChannelAddress.id
            if table is OutboxMessage.__table__:
                ref = and_(ref, OutboxMessage.state.not_in(_FINAL))
            conditions.append(~exists().where(ref))
    return conditions


async def purge(session: AsyncSession, *, now: datetime) -> dict[str, int]:
    """Apply every retention rule once; returns how many rows each rule touched."""
    done: dict[str, int] = {}
    sqlite = session.get_bind().dialect.name == "sqlite"
    forget = _FORGET_LOCATIONS_SQLITE if sqlite else _FORGET_LOCATIONS
    done["alert_locations"] = _rowcount(await session.execute(forget))
    done["outbox"] = _rowcount(
        await session.execute(
            delete(OutboxMessage).where(
                OutboxMessage.state.in_(_FINAL),
                OutboxMessage.created_at < now - OUTBOX_KEPT,
                # an open alert's rows say who was alerted: they get the all-clear (a
                # detention can last longer than 30 days)
                or_(
                    OutboxMessage.alert_id.is_(None),
                    ~exists().where(
                        Alert.id == OutboxMessage.alert_id, Alert.state != AlertState.resolved
                    ),
                ),
            )
        )
    )
    done["sessions"] = _rowcount(
        await session.execute(
            delete(DeskSession).where(
                or_(DeskSession.expires_at <= now, DeskSession.revoked_at.is_not(None))
            )
        )
    )
    done["invites"] = _rowcount(
        await session.execute(
            delete(InviteCode).where(
                or_(
                    InviteCode.used_at < now - INVITES_KEPT,
                    InviteCode.revoked_at < now - INVITES_KEPT,
                    InviteCode.expires_at < now - INVITES_KEPT,
                )
            )
        )
    )
    done["button_tokens"] = _rowcount(
        await session.execute(delete(CallbackToken).where(CallbackToken.expires_at <= now))
    )
    done["checkins"] = _rowcount(
        await session.execute(
            delete(CheckIn).where(
                CheckIn.state.in_(_ENDED),
                CheckIn.due_at < now - CHECKINS_KEPT,
                # a missed one, once no alert of the defender is open: nothing meets it
                or_(
                    CheckIn.state != CheckInState.missed,
                    ~exists().where(
                        Alert.defender_id == CheckIn.defender_id,
                        Alert.state != AlertState.resolved,
                    ),
                ),
            )
        )
    )
    done["broadcasts"] = _rowcount(  # their recipients and answers go with them (cascade)
        await session.execute(
            delete(Broadcast).where(
                or_(
                    and_(
                        Broadcast.closes_at.is_(None),
                        Broadcast.created_at < now - BROADCASTS_KEPT,
                    ),
                    Broadcast.closed_at < now - BROADCASTS_KEPT,
                )
            )
        )
    )
    orphans = select(ChannelAddress.id).where(
        *_unowned(), *_unreferenced(), ChannelAddress.created_at < now - ORPHANS_KEPT
    )
    done["addresses"] = _rowcount(
        await session.execute(delete(ChannelAddress).where(ChannelAddress.id.in_(orphans)))
    )
    return done
