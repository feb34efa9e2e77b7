"""A case handed from one desk (organisation) to another: offered, then accepted or not."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, CreatedMixin, IdMixin


class HandoffState(StrEnum):
    offered = "offered"  # waiting for the receiving desk
    accepted = "accepted"  # the defender now belongs to the receiving desk
    declined = "declined"  # by the receiving desk
    withdrawn = "withdrawn"  # by the offering desk, or the defender's data was deleted


_OPEN = text("state = 'offered'")


class Handoff(IdMixin, CreatedMixin, Base):
    """Only ids and states: no names, no notes (the desks talk about the case elsewhere)."""

    __tablename__ = "handoffs"

    defender_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("defenders.id", ondelete="CASCADE"), index=True
    )
    from_org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE")
    )
    to_org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE")
    )
    state: Mapped[HandoffState] = mapped_column(default=HandoffState.offered)
    offered_by: Mapped[str] = mapped_column(String(120))  # an audit actor
    decided_by: Mapped[str | None] = mapped_column(String(120))
    decided_at: Mapped[datetime | None]

    __table_args__ = (
        # One offer open per defender at a time.
        Index(
            "ux_handoffs_open",
            "defender_id",
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
        Index("ix_handoffs_from", "from_org_id", "created_at"),
        Index("ix_handoffs_to", "to_org_id", "created_at"),
    )
