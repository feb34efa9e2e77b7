"""Alerts and their timeline."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core import queue_versions
from core.models.base import Base, BigId, CreatedMixin, IdMixin, utcnow


class AlertKind(StrEnum):
    panic = "panic"
    duress = "duress"
    missed_checkin = "missed_checkin"
    report = "report"
    # R6: a defender's Signal safety number changed (a new phone, or their number in other
    # hands): the desk alone, and never the device until they are verified another way.
    identity_changed = "identity_changed"


# Kinds whose alerts are flagged "do not contact the device" (the phone may be another's);
# their desk notices say so themselves.
DO_NOT_CONTACT = (AlertKind.duress, AlertKind.identity_changed)


class AlertState(StrEnum):
    triggered = "triggered"
    acknowledged = "acknowledged"
    resolved = "resolved"


class Priority(IntEnum):
    P0 = 0  # panic and duress alerts to desk and contacts
    P1 = 1  # conversation replies, missed check-in notices
    P2 = 2  # reminders
    P3 = 3  # broadcasts and roll-calls


_LOCATED = text("location_sealed IS NOT NULL")


class Alert(IdMixin, CreatedMixin, Base):
    __tablename__ = "alerts"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    defender_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("defenders.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[AlertKind]
    priority: Mapped[int] = mapped_column(SmallInteger)
    state: Mapped[AlertState] = mapped_column(default=AlertState.triggered)
    dedup_key: Mapped[str] = mapped_column(String(80), index=True)  # this alert's own
    # (defender, kind) while open, NULL once resolved: one open alert per defender and kind,
    # enforced by a plain unique constraint on both backends (NULLs never collide).
    open_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    policy_snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    do_not_contact: Mapped[bool] = mapped_column(default=False)  # duress: never reply to device
    # A responder keeps the alert open after a check-in, to verify proof of life.
    keep_open: Mapped[bool] = mapped_column(default=False)
    step: Mapped[int] = mapped_column(default=0)
    next_step_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(default=1)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    triggered_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("responders.id", ondelete="SET NULL")
    )
    assigned_to: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("responders.id", ondelete="SET NULL")
    )
    resolved_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(24))
    location_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_alerts_queue", "org_id", "state", "priority", "triggered_at"),
        Index("ix_alerts_due", "state", "next_step_at"),
        # Retention clears a resolved alert's location without reading every alert kept.
        Index(
            "ix_alerts_located",
            "state",
            sqlite_where=_LOCATED,
            postgresql_where=_LOCATED,
        ),
    )


class AlertEvent(Base):
    """One line of an alert's timeline: what happened, never what anyone wrote."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(80))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (Index(None, "alert_id", "at"),)


class QueueVersion(Base):
    """How many times an organisation's alert queue has changed: kept by triggers on SQLite,
    for the API's kept pages (core.queue_versions). No foreign key: an organisation's
    deletion deletes its alerts, whose triggers write here as it goes."""

    __tablename__ = "queue_versions"

    org_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


queue_versions.install(Base.metadata)
