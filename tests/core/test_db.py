from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import (
    PG_POOL,
    SQLITE_POOL,
    committed,
    create_engine,
    retried,
    retryable,
    then,
    transaction,
)
from core.models import Defender, Organisation
from tests.deadlocks import deadlock


async def test_it_keeps_timestamps_utc_aware(sessions: async_sessionmaker[AsyncSession]) -> None:
    berlin_noon = datetime(2026, 3, 29, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    async with transaction(sessions) as s:
        org = Organisation(name="Desk", created_at=berlin_noon)
        s.add(org)
    async with sessions() as s:
        got = (await s.execute(select(Organisation))).scalar_one()
    assert got.created_at.tzinfo is not None
    assert got.created_at == berlin_noon
    assert got.created_at.utcoffset() == timedelta(0)
    assert got.created_at.hour == 10


async def test_it_refuses_naive_timestamps(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        async with transaction(sessions) as s:
            s.add(Organisation(name="Desk", created_at=datetime(2026, 1, 1)))


async def test_it_enforces_foreign_keys(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(IntegrityError):
        async with transaction(sessions) as s:
            s.add(Defender(org_id=uuid.uuid4(), handle="blue-heron-17"))


async def test_it_runs_sqlite_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    try:
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            fks = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
            cache = (await conn.execute(text("PRAGMA cache_size"))).scalar_one()
    finally:
        await engine.dispose()
    assert (mode, fks) == ("wal", 1)
    assert cache == -16384  # 16 MiB of pages per connection (core.sqlite.pragmas)


async def test_it_rolls_back_a_failed_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(RuntimeError):
        async with transaction(sessions) as s:
            s.add(Organisation(name="Gone", created_at=datetime.now(UTC)))
            await s.flush()
            raise RuntimeError("boom")
    async with sessions() as s:
        assert (await s.execute(select(Organisation))).first() is None


async def test_it_keeps_bound_values_out_of_error_texts(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as s:
        s.add(Organisation(name="CANARY-DESK-NAME"))
    with pytest.raises(IntegrityError) as duplicate:
        async with transaction(sessions) as s:
            s.add(Organisation(name="CANARY-DESK-NAME"))
    assert "CANARY-DESK-NAME" not in str(duplicate.value)


def test_deleted_rows_are_overwritten_whatever_the_build(tmp_path: Path) -> None:
    """R17: a deleted report or address must not stay readable in the file's free pages.
    Debian builds SQLite with secure_delete on; a build without it must get it from us."""
    import sqlite3

    from core.sqlite import pragmas

    conn = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    try:
        conn.execute("PRAGMA secure_delete=0")  # as a build without the default starts
        pragmas(conn, None)
        assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    finally:
        conn.close()


async def test_concurrent_sessions_reuse_their_connections(db_url: str) -> None:
    """As many sessions at once as the pool keeps, twice: the second round opens no
    connection. Beyond the pool SQLAlchemy closes each connection on its return, so every
    busy moment paid a new one again (SQLite: a thread, the pragmas, the schema and a cold
    cache; PostgreSQL: a server process and its authentication)."""
    engine = create_engine(db_url)
    kept = SQLITE_POOL if db_url.startswith("sqlite") else PG_POOL
    opened: list[object] = []

    def connected(conn: object, _record: object) -> None:
        opened.append(conn)

    event.listen(engine.sync_engine, "connect", connected)
    sessions = async_sessionmaker(engine)
    holding: list[object] = []

    async def one(gate: asyncio.Event) -> None:
        async with sessions() as session:
            holding.append(await session.connection())
            await gate.wait()  # all of them hold a connection at once

    try:
        rounds = []
        for turn in range(2):
            gate = asyncio.Event()
            tasks = [asyncio.create_task(one(gate)) for _ in range(kept)]
            for _tick in range(500):  # up to 5 s for all of them to connect
                if len(holding) == kept * (turn + 1):
                    break
                await asyncio.sleep(0.01)
            gate.set()
            await asyncio.gather(*tasks)
            rounds.append(len(opened))
        assert rounds == [kept, kept]
    finally:
        await engine.dispose()


async def test_it_knows_a_deadlock_from_other_errors(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(DBAPIError) as aborted:
        async with transaction(sessions) as s:
            await deadlock(s)
    assert retryable(aborted.value)
    with pytest.raises(IntegrityError) as duplicate:
        async with transaction(sessions) as s:
            s.add(Defender(org_id=uuid.uuid4(), handle="blue-heron-17"))
    assert not retryable(duplicate.value)
    assert not retryable(OperationalError("SELECT 1", None, Exception("database is locked")))


async def test_it_runs_a_transaction_aborted_by_a_deadlock_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    runs: list[int] = []

    async def work() -> uuid.UUID:
        async with transaction(sessions) as s:
            org = Organisation(name="Desk")
            s.add(org)
            await s.flush()
            runs.append(1)
            if len(runs) == 1:
                await deadlock(s)
            return org.id

    kept = await retried(work, what="test")
    async with sessions() as s:
        assert [o.id for o in (await s.execute(select(Organisation))).scalars()] == [kept]
    assert len(runs) == 2

    async def always() -> None:
        async with transaction(sessions) as s:
            await deadlock(s)

    with pytest.raises(DBAPIError):
        await retried(always, what="test")


async def test_work_left_for_after_the_commit_runs_once_committed_and_never_after_a_rollback(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    seen: list[list[str]] = []

    async def after() -> None:  # in a session of its own: sees what the caller committed
        async with sessions() as other:
            seen.append(list(await other.scalars(select(Organisation.name))))

    async with transaction(sessions) as s:
        s.add(Organisation(name="Desk", created_at=datetime.now(UTC)))
        then(s, after)
        assert seen == []
    assert seen == [["Desk"]]
    with pytest.raises(RuntimeError):
        async with transaction(sessions) as s:
            then(s, after)
            raise RuntimeError
    async with sessions() as s:  # a rollback of the session forgets it too
        s.add(Organisation(name="Gone", created_at=datetime.now(UTC)))
        await s.flush()
        then(s, after)
        await s.rollback()
        await committed(s)
    assert seen == [["Desk"]]
