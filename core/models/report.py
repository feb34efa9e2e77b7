"""Incident reports: triage fields the server uses (encrypted), the body only the desk reads."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, CreatedMixin, Encrypted, IdMixin


class Report(Encrypted, CreatedMixin, Base):
    __tablename__ = "reports"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    defender_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("defenders.id", ondelete="SET NULL"), index=True
    )
    receipt_code: Mapped[str] = mapped_column(String(16), unique=True)
    triage_enc: Mapped[bytes | None] = mapped_column(
        LargeBinary
    )  # act type, urgency, country, date
    sealed_body: Mapped[bytes] = mapped_column(LargeBinary)  # sealed box to the org's public key
    # The desk's review (verification, confirmed act codes, intervention), under this row's
    # key like the triage: a confirmed code names the type of act as the triage does.
    review_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    version: Mapped[int] = mapped_column(default=1)
    supersedes_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("reports.id", ondelete="SET NULL")
    )

    __table_args__ = (Index(None, "org_id", "created_at"),)


class Evidence(IdMixin, CreatedMixin, Base):
    """A photo, document or voice note for a report, sealed to the organisation key on arrival.

    The row exists before its report does (evidence is sealed the moment it arrives, the report
    is filed at the end), so ``report_id`` is the id the report will get, not a foreign key.
    Only ids and times are in clear; hash, type, name and bytes are inside the sealed box.
    """

    __tablename__ = "report_evidence"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    defender_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("defenders.id", ondelete="SET NULL"), index=True
    )
    report_id: Mapped[uuid.UUID] = mapped_column(index=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    filed_at: Mapped[datetime | None]  # None: the report was never sent; purged with the draft
