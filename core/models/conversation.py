"""Conversation state of the flows, and the inbound ids already handled."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, Encrypted, utcnow


class Conversation(Encrypted, Base):
    """(defender, flow, state, data): a restart resumes where the defender stopped."""

    __tablename__ = "conversations"

    defender_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("defenders.id", ondelete="CASCADE"), unique=True
    )
    address_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("channel_addresses.id", ondelete="CASCADE"), unique=True
    )
    flow: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(40))
    data_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    version: Mapped[int] = mapped_column(default=1)

    # A writer that loaded an older version fails (StaleDataError) instead of overwriting.
    __mapper_args__ = {"version_id_col": version}


class SeenInbound(Base):
    """Inbound message ids already handled (update_id; Signal sender+timestamp), for dedupe."""

    __tablename__ = "seen_inbound"

    channel: Mapped[str] = mapped_column(String(24), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)  # blind index of the id
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
