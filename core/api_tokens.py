"""Integration tokens for the desk API: created with their scopes, found by their token, and
cached for a few seconds (``TokenCache``); only their SHA-256 is stored.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import TOKEN_SCOPES, Principal, digest
from core.desk_sessions import TOUCH_EVERY
from core.models import ApiToken

TOKEN_CACHE_TTL = timedelta(seconds=5)  # how long another process may read with a revoked token


async def create_token(
    session: AsyncSession, *, org_id: uuid.UUID, name: str, scopes: list[str], now: datetime
) -> tuple[ApiToken, str]:
    """A new integration token: (row, plaintext shown once)."""
    plaintext = "amp_" + secrets.token_urlsafe(32)
    row = ApiToken(
        id=uuid.uuid4(),
        org_id=org_id,
        name=name,
        token_hash=digest(plaintext),
        scopes=sorted(set(scopes)),
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row, plaintext


class TokenCache:
    """Live tokens' principals for a few seconds, so a busy integration is not one more query
    per request. Only live tokens are kept (a wrong or revoked token always asks the database).

    Revocation: ``revoked()``, called once the revoking transaction has committed, empties the
    cache and starts a new generation; a lookup that read the database before that moment
    belongs to the old generation and is not stored. So a revoked token stops working at once in
    this process, and in any other process sharing the database (``amparo api --workers``, or
    several ``amparo api``) within ``ttl``: tests/api/test_hot_path.py; for a write, at once
    (``hold_token``: tests/api/test_token_race.py). Sessions are not cached.
    """

    def __init__(self, ttl: timedelta = TOKEN_CACHE_TTL, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.generation = 0
        self._entries: dict[bytes, tuple[datetime, Principal]] = {}

    def get(self, key: bytes, now: datetime) -> Principal | None:
        if (found := self._entries.get(key)) is None:
            return None
        stored_at, principal = found
        if not stored_at <= now < stored_at + self.ttl:  # stale, or the clock went back
            del self._entries[key]
            return None
        return principal

    def put(self, key: bytes, principal: Principal, now: datetime, generation: int) -> None:
        if generation != self.generation:
            return  # read before a revocation committed: maybe no longer true
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (now, principal)

    def revoked(self) -> None:
        self._entries.clear()
        self.generation += 1


async def token_principal(
    session: AsyncSession, token: str, now: datetime, cache: TokenCache | None = None
) -> Principal | None:
    key = digest(token)
    generation = 0
    if cache is not None:
        if (cached := cache.get(key, now)) is not None:
            return cached
        generation = cache.generation
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == key))
    if row is None or row.revoked_at is not None:
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
    scopes = frozenset(row.scopes) & TOKEN_SCOPES
    principal = Principal(
        org_id=row.org_id, scopes=scopes, actor=f"token:{row.id}", token_id=row.id
    )
    if cache is not None:
        cache.put(key, principal, now, generation)
    return principal
