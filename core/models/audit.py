"""The append-only, hash-chained audit log of responder and operator actions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base


class AuditEntry(Base):
    __tablename__ = "audit_entries"

    # Assigned by the writer as previous + 1, so a concurrent writer collides instead of forking.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str | None] = mapped_column(String(120))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))

    # An organisation's entries in chain order: its pages, and the count that numbers them
    # (core.audit.org_entries), read from the index alone.
    __table_args__ = (Index("ix_audit_entries_org_seq", "org_id", "seq"),)
