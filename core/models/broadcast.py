"""The desk's broadcasts to its defenders, and who each one was sent to.

A roll-call ("everyone check in now") is a broadcast with answer choices and a closing time:
each recipient's answer is kept on their recipient row until it closes."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, CreatedMixin, Encrypted

_OPEN = text("closes_at IS NOT NULL AND closed_at IS NULL")
_UNFINISHED = text("fan_out_since IS NOT NULL")


class Broadcast(Encrypted, CreatedMixin, Base):
    """A message from the desk to every active defender of the organisation. The text is
    what the server must use (it renders it for each defender): encrypted at rest."""

    __tablename__ = "broadcasts"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    text_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    sent_by: Mapped[str] = mapped_column(String(80))  # "responder:<id>" or "token:<id>"
    recipients: Mapped[int] = mapped_column(default=0)
    closes_at: Mapped[datetime | None]  # a roll-call's; None: a plain broadcast
    closed_at: Mapped[datetime | None]  # when a roll-call was closed (its time, or early)
    # While its fan-out is unfinished (core.broadcast_chunks): when it began; None once every
    # recipient's rows are written. The sweep resumes one left unfinished (core.broadcast_resume).
    fan_out_since: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_broadcasts_org_recent", "org_id", "created_at", "id"),
        # The engine's query: roll-calls still open, by closing time (only those are indexed).
        Index(
            "ix_broadcasts_closing",
            "closes_at",
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
        # The sweep's query: fan-outs left unfinished (none, nearly always: an empty index).
        Index(
            "ix_broadcasts_unfinished",
            "fan_out_since",
            sqlite_where=_UNFINISHED,
            postgresql_where=_UNFINISHED,
        ),
    )


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
    answer: Mapped[str | None] = mapped_column(String(8))  # a roll-call's: "safe" or "help"
    answered_at: Mapped[datetime | None]
