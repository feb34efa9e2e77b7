"""Opaque button tokens: what a pressed button means is known only to the server (R4)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base


class CallbackToken(Base):
    __tablename__ = "callback_tokens"

    token_index: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    chat_index: Mapped[bytes] = mapped_column(LargeBinary(32))  # whose chat it was sent to
    keyboard: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)  # siblings die together
    choice: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(index=True)
