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
    # During a rotation the replaced secrets sign too (one v1= each), until each one's own
    # end: a JSON list [[secret, until], ...], newest first (core.webhook_secrets.rotate);
    # previous_until is the latest end.
    previous_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_until: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
