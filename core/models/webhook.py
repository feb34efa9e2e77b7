"""Organisations' external desk webhooks (DESIGN.md, "Outbound desk webhook")."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, CreatedMixin, Encrypted


class Webhook(Encrypted, CreatedMixin, Base):
    """Where the organisation's own case system receives signed alert events."""

    __tablename__ = "webhooks"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(500))
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # During a rotation both secrets sign (two v1= values) until previous_until.
    previous_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_until: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
