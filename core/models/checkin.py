"""Check-ins: durable deadlines that the scheduler sweeps (timers are rows, not jobs)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, CreatedMixin, IdMixin


class CheckInKind(StrEnum):
    timer = "timer"  # one-off: "check on me in 2 h"
    routine = "routine"  # "every day at 20:00" in the defender's zone


class CheckInState(StrEnum):
    armed = "armed"
    reminded = "reminded"  # deadline passed, reminder sent, grace running
    missed = "missed"  # grace passed, an alert is open
    met = "met"
    paused = "paused"
    cancelled = "cancelled"


class CheckIn(IdMixin, CreatedMixin, Base):
    __tablename__ = "checkins"

    defender_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("defenders.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[CheckInKind]
    due_at: Mapped[datetime]
    grace_s: Mapped[int] = mapped_column(default=15 * 60)
    # Seconds before due_at for the optional pre-reminder (None: no pre-reminder).
    pre_reminder_s: Mapped[int | None]
    state: Mapped[CheckInState] = mapped_column(default=CheckInState.armed)
    # The sweep's next look at this row (pre-reminder, deadline, end of grace).
    next_action_at: Mapped[datetime]
    routine_time: Mapped[str | None] = mapped_column(String(5))  # "HH:MM", local
    routine_days: Mapped[str | None] = mapped_column(String(7))  # "0123456", Monday = 0
    version: Mapped[int] = mapped_column(default=1)  # fence for conditional claims
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    paused_reason: Mapped[str | None] = mapped_column(String(24))

    __table_args__ = (
        # The sweep's hot query: live rows whose next action is due.
        Index("ix_checkins_due", "state", "next_action_at"),
    )
