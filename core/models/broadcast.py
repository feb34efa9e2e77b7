"""The desk's broadcasts to its defenders, and who each one was sent to."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, CreatedMixin, Encrypted


class Broadcast(Encrypted, CreatedMixin, Base):
    """A message from the desk to every active defender of the organisation. The text is
    what the server must use (it renders it for each defender): encrypted at rest."""

    __tablename__ = "broadcasts"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    text_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    sent_by: Mapped[str] = mapped_column(String(80))  # "responder:<id>" or "token:<id>"
    recipients: Mapped[int] = mapped_column(default=0)

    __table_args__ = (Index("ix_broadcasts_org_recent", "org_id", "created_at", "id"),)


class BroadcastRecipient(Base):
    """One defender a broadcast was queued for, and the outbox row taking it (counts by
    delivery state come from that row while retention keeps it)."""

    __tablename__ = "broadcast_recipients"

    broadcast_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    defender_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("defenders.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    outbox_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # no FK: retention deletes rows
