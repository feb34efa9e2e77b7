"""Issue and redeem opaque button tokens, bound on the server to chat, choice and expiry."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import Vault
from core.models import CallbackToken

TTL = timedelta(hours=24)
_KIND = "callback"


async def issue(
    session: AsyncSession, vault: Vault, *, chat_index: bytes, choices: list[str], now: datetime
) -> list[str]:
    """One fresh token per choice; only their HMACs are stored."""
    keyboard = uuid.uuid4()
    tokens = []
    for choice in choices:
        token = secrets.token_urlsafe(16)  # 22 characters: well within 64 bytes
        session.add(
            CallbackToken(
                token_index=vault.blind_index(_KIND, token),
                chat_index=chat_index,
                keyboard=keyboard,
                choice=choice,
                expires_at=now + TTL,
            )
        )
        tokens.append(token)
    return tokens


async def redeem(
    session: AsyncSession, vault: Vault, *, token: str, chat_index: bytes, now: datetime
) -> str | None:
    """The choice behind ``token`` if it was sent to this chat and is still valid; used once.

    A foreign, expired, reused or garbage token gives None and changes nothing else.
    """
    if not token or len(token) > 64:
        return None
    row = await session.get(CallbackToken, vault.blind_index(_KIND, token))
    if row is None or row.chat_index != chat_index:
        return None
    await session.execute(delete(CallbackToken).where(CallbackToken.keyboard == row.keyboard))
    return row.choice if row.expires_at > now else None


async def purge_expired(session: AsyncSession, *, now: datetime) -> None:
    await session.execute(delete(CallbackToken).where(CallbackToken.expires_at <= now))
