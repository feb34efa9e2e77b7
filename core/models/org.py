"""Organisations (desks and networks), their responders, tokens, invites and policies."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, CreatedMixin, Encrypted, IdMixin


class Organisation(IdMixin, CreatedMixin, Base):
    __tablename__ = "organisations"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Sealed items are sealed to public_key; the private key is stored only under a passphrase.
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    protected_private_key: Mapped[bytes | None] = mapped_column(LargeBinary)


class Role(StrEnum):
    admin = "admin"
    responder = "responder"
    observer = "observer"


class Responder(Encrypted, CreatedMixin, Base):
    __tablename__ = "responders"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(120), unique=True)
    role: Mapped[Role]
    password_hash: Mapped[str] = mapped_column(String(200))
    must_change_password: Mapped[bool] = mapped_column(default=True)
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_step: Mapped[int] = mapped_column(default=0)  # each TOTP code works once
    active: Mapped[bool] = mapped_column(default=True)
    on_duty: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index(None, "org_id", "on_duty"),)


class ApiToken(IdMixin, CreatedMixin, Base):
    __tablename__ = "api_tokens"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class InviteCode(IdMixin, CreatedMixin, Base):
    """A single-use code a desk gives a defender (or a defender gives a trusted contact)."""

    __tablename__ = "invite_codes"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    code_index: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)  # blind index
    purpose: Mapped[str] = mapped_column(String(24), default="defender")
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("responders.id", ondelete="SET NULL")
    )


class EscalationPolicy(IdMixin, CreatedMixin, Base):
    """An editable ladder; each alert freezes a copy of it when it opens."""

    __tablename__ = "escalation_policies"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    steps: Mapped[dict[str, Any]] = mapped_column(JSON)
    is_default: Mapped[bool] = mapped_column(default=False)
    version: Mapped[int] = mapped_column(default=1)

    __table_args__ = (UniqueConstraint("org_id", "name"),)
