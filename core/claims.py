"""Claiming rows safely on both backends.

SQLite has one writer and no row locks: a transaction that reads and then writes fails at once
("database is locked") if another writer committed in between, because its snapshot cannot be
upgraded. So writers take the write lock *first* (a no-op UPDATE makes the driver BEGIN and
SQLite take its RESERVED lock, waiting on the busy timeout), then read. PostgreSQL locks the rows
themselves: ``FOR UPDATE`` (wait) or ``FOR UPDATE SKIP LOCKED`` (claim what nobody holds).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import AsyncSession

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


def dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def write_lock(session: AsyncSession) -> None:
    """Hold SQLite's write lock until the end of the transaction (no-op on PostgreSQL)."""
    if dialect(session) == "sqlite":
        await session.execute(text("UPDATE checkins SET version = version WHERE 0"))


def locked(
    stmt: S,
    session: AsyncSession,
    *,
    skip: bool = False,
    of: Any = None,
    key_share: bool = False,
    read: bool = False,
) -> S:
    """``stmt`` with row locks on PostgreSQL (SQLite relies on ``write_lock``). ``key_share``:
    ``FOR NO KEY UPDATE``, which a foreign key's check (``FOR KEY SHARE``) does not wait for;
    with ``read``, ``FOR KEY SHARE`` itself: the row neither deleted nor locked ``FOR UPDATE``
    until the transaction ends."""
    if dialect(session) != "postgresql":
        return stmt
    return stmt.with_for_update(skip_locked=skip, of=of, key_share=key_share, read=read)
