"""A deadlock on demand: the error PostgreSQL raises when it aborts one of two transactions
waiting for each other (SQLSTATE 40P01), at the point of a transaction a test chooses.

On PostgreSQL the server itself raises it (``RAISE ... USING ERRCODE``): it comes through
asyncpg and SQLAlchemy as a real deadlock does, and aborts the transaction as one does.
SQLite never deadlocks (one writer); there the same error is built as asyncpg's would read.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from core.claims import dialect

DEADLOCK = text(
    "DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected'; END $$"
)


class DeadlockDetected(Exception):
    sqlstate = "40P01"


async def deadlock(session: AsyncSession) -> None:
    """Raise, from ``session``'s transaction, the error PostgreSQL aborts it with."""
    if dialect(session) == "postgresql":
        await session.execute(DEADLOCK)
    raise DBAPIError("UPDATE ...", None, DeadlockDetected("deadlock detected"))
