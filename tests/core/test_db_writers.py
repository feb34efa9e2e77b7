"""Many writers in one process: every write transaction commits (SQLite's single writer
queues them; none fails with "database is locked"), and a read inside a write never waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.models import Organisation

WRITERS = 24
ROUNDS = 3
BOUND_S = 60.0  # far above a healthy run; a lock waiting for itself would hit it


async def _writer(sessions: async_sessionmaker[AsyncSession], n: int) -> None:
    for r in range(ROUNDS):
        async with transaction(sessions) as s:
            # Read, then write early, then yield to the loop while holding the write lock:
            # the other writers pile up behind it.
            await s.execute(select(func.count()).select_from(Organisation))
            await s.execute(
                update(Organisation)
                .where(Organisation.name == "shared")
                .values(created_at=datetime.now(UTC))
            )
            for _ in range(3):
                await asyncio.sleep(0)
            s.add(Organisation(name=f"w{n}-{r}", created_at=datetime.now(UTC)))


async def test_concurrent_writers_all_commit(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as s:
        s.add(Organisation(name="shared", created_at=datetime.now(UTC)))

    results = await asyncio.wait_for(
        asyncio.gather(*(_writer(sessions, n) for n in range(WRITERS)), return_exceptions=True),
        BOUND_S,
    )

    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    assert failures == []
    async with sessions() as s:
        count = (await s.execute(select(func.count()).select_from(Organisation))).scalar_one()
    assert count == 1 + WRITERS * ROUNDS


async def test_a_read_inside_a_write_does_not_wait_for_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def nested() -> tuple[int, int]:
        async with transaction(sessions) as outer:
            outer.add(Organisation(name="outer", created_at=datetime.now(UTC)))
            await outer.flush()  # the outer transaction now holds the write lock
            async with sessions() as reader:  # a second connection, read-only
                seen = await reader.execute(select(func.count()).select_from(Organisation))
                inner = seen.scalar_one()
            mine = await outer.execute(select(func.count()).select_from(Organisation))
            return inner, mine.scalar_one()

    inner, mine = await asyncio.wait_for(nested(), BOUND_S)
    assert (inner, mine) == (0, 1)  # the reader sees the last commit, the writer its own row
    async with transaction(sessions) as after:  # and the lock was let go
        after.add(Organisation(name="after", created_at=datetime.now(UTC)))
    async with sessions() as s:
        names = set((await s.execute(select(Organisation.name))).scalars())
    assert names == {"outer", "after"}
