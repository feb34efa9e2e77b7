"""The outbox: every outbound message is a row, delivered by one dispatcher."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, LargeBinary, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, CreatedMixin, Encrypted, utcnow


class OutboxState(StrEnum):
    pending = "pending"
    sending = "sending"  # leased by a dispatcher
    delivered = "delivered"
    failed = "failed"  # permanent failure: fallback taken
    dead = "dead"  # gave up; visible to the desk, can be replayed


_WEBHOOK = text("webhook_id IS NOT NULL")


class OutboxMessage(Encrypted, CreatedMixin, Base):
    __tablename__ = "outbox"

    priority: Mapped[int] = mapped_column(SmallInteger)
    channel: Mapped[str] = mapped_column(String(24))
    address_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("channel_addresses.id", ondelete="SET NULL"), index=True
    )
    alert_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="SET NULL"), index=True
    )
    webhook_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE")
    )
    # Who the row reaches: "defender", "contact", "responder" or "webhook" (None: unspecified).
    recipient: Mapped[str | None] = mapped_column(String(16))
    payload_enc: Mapped[bytes | None] = mapped_column(LargeBinary)  # shredded once delivered
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    state: Mapped[OutboxState] = mapped_column(default=OutboxState.pending)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(200))  # a class of error, no content

    __table_args__ = (
        # The dispatcher's hot query: pending rows by priority, then age.
        Index("ix_outbox_pending", "state", "priority", "next_attempt_at"),
        # Retention: finished rows by age, not every finished row of the last 30 days.
        Index("ix_outbox_ended", "state", "created_at"),
        # A webhook's rows (most rows have none: only those are indexed).
        Index(
            "ix_outbox_webhook_id",
            "webhook_id",
            sqlite_where=_WEBHOOK,
            postgresql_where=_WEBHOOK,
        ),
    )
