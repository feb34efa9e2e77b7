"""What the protection desk adds: browser sessions, sealed notes, report reviews, key history."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models.alert import Alert
from core.models.base import Base, BigId, CreatedMixin, IdMixin, utcnow


class DeskSession(IdMixin, CreatedMixin, Base):
    """A responder's browser session; only the SHA-256 of its token is stored."""

    __tablename__ = "desk_sessions"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    csrf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    responder_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("responders.id", ondelete="CASCADE"), index=True
    )
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]  # absolute timeout, whatever the activity
    revoked_at: Mapped[datetime | None]


class AlertNote(IdMixin, CreatedMixin, Base):
    """A responder's note on an alert, sealed to the organisation key on arrival."""

    __tablename__ = "alert_notes"

    alert_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), index=True
    )
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("responders.id", ondelete="SET NULL")
    )
    key_version: Mapped[int]
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


class ReportReview(Base):
    """Who last changed the desk's fields on a report, and when. The fields themselves
    (verification, confirmed HURIDOCS codes, intervention) are encrypted in
    ``reports.review_enc``; the clear columns below held reviews written before that, until
    ``amparo db upgrade`` encrypted them (core.clear_reviews) or they were next changed."""

    __tablename__ = "report_reviews"

    report_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    verification: Mapped[str] = mapped_column(String(24), default="unknown")  # HURIDOCS mt41
    act_codes: Mapped[list[str]] = mapped_column(JSON, default=list)  # HURIDOCS mt4
    intervention_type: Mapped[str | None] = mapped_column(String(40))  # HURIDOCS mt20
    intervention_status: Mapped[str | None] = mapped_column(String(40))  # HURIDOCS mt45
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("responders.id", ondelete="SET NULL")
    )


class DeskGroup(CreatedMixin, Base):
    """The organisation's responder group chat (one per organisation): the desk step posts
    there too, and its linked responders acknowledge and resolve alerts from it. The chat id
    lives in ``channel_addresses`` (encrypted, found through its blind index)."""

    __tablename__ = "desk_groups"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True
    )
    address_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("channel_addresses.id", ondelete="CASCADE"), unique=True
    )
    linked_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("responders.id", ondelete="SET NULL")
    )
    # The language of the engine's posts in the group, set by the desk; None: the default.
    locale: Mapped[str | None] = mapped_column(String(16))


class OrgKey(IdMixin, CreatedMixin, Base):
    """Every key pair an organisation has used, so items sealed before a rotation still open."""

    __tablename__ = "org_keys"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    version: Mapped[int]
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    protected_private_key: Mapped[bytes] = mapped_column(LargeBinary)  # under a passphrase
    retired_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("org_id", "version"),)


# The desk's queue is read newest first, per organisation, optionally by state, kind or
# priority (keyset pages): each filter has its index, so a page reads its 50 rows only, not
# the rows of the other kinds or priorities in between (bench/api.py).
Index("ix_alerts_org_recent", Alert.org_id, Alert.triggered_at, Alert.id)
Index("ix_alerts_org_state_recent", Alert.org_id, Alert.state, Alert.triggered_at, Alert.id)
Index("ix_alerts_org_kind_recent", Alert.org_id, Alert.kind, Alert.triggered_at, Alert.id)
Index("ix_alerts_org_priority_recent", Alert.org_id, Alert.priority, Alert.triggered_at, Alert.id)


class ThrottleHit(Base):
    """One counted attempt (a login, an export, an invite code), shared by every process;
    the key is a SHA-256 digest, never a username or an address (core.throttle)."""

    __tablename__ = "throttle_hits"
    __table_args__ = (
        Index("ix_throttle_hits_scope_key_at", "scope", "key_hash", "at"),
        Index("ix_throttle_hits_scope_at", "scope", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    at: Mapped[datetime]
