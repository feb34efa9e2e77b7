"""core.sqlite: which aiosqlite calls run on the event loop's thread, and that the loop never
waits there for another connection's lock. SQLite only: PostgreSQL's driver has no thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.db import create_engine, transaction
from core.models import Organisation
from core.sqlite import BULK, kind, run_inline


def test_it_sorts_the_calls() -> None:
    conn = sqlite3.connect(":memory:")
    cur = conn.cursor()
    assert kind(cur.execute, ("SELECT 1",)) == "free"
    assert kind(cur.execute, ("\n  select * FROM t",)) == "free"
    assert kind(cur.fetchall, ()) == "free"
    assert kind(cur.close, ()) == "free"
    assert kind(conn.cursor, ()) == "free"
    for sql in ("INSERT INTO t VALUES (1)", "UPDATE t SET a=1", "DELETE FROM t", "REPLACE INTO t"):
        assert kind(cur.execute, (sql,)) == "write"
        assert kind(cur.executemany, (sql, [])) == "write"
    for sql in (
        "BEGIN",
        "COMMIT",
        "PRAGMA busy_timeout",
        "CREATE TABLE t (a)",
        "WITH x AS (SELECT 1) DELETE FROM t",
        "",
    ):
        assert kind(cur.execute, (sql,)) == "queued"
    many = [(i,) for i in range(BULK + 1)]  # bulk work overlaps the loop on the thread
    assert kind(cur.executemany, ("INSERT INTO t VALUES (?)", many)) == "queued"
    assert kind(cur.executemany, ("INSERT INTO t VALUES (?)", iter([(1,)]))) == "queued"
    assert (
        kind(cur.execute, ("SELECT * FROM t WHERE a IN (?)", tuple(range(BULK + 1)))) == "queued"
    )
    assert kind(cur.executemany, ("INSERT INTO t VALUES (?)", many[:BULK])) == "write"
    assert kind(conn.commit, ()) == "queued"
    assert kind(conn.rollback, ()) == "queued"
    assert kind(conn.close, ()) == "queued"
    conn.close()


async def _engine(tmp_path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Organisation.metadata.create_all)
    return engine


async def test_a_transaction_goes_to_the_drivers_thread_only_to_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threaded: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        threaded.append(getattr(fn, "__name__", "?"))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    engine = await _engine(tmp_path)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with transaction(sessions) as s:  # the pool's connection is warm from here
            s.add(Organisation(name="Desk"))
        threaded.clear()
        async with transaction(sessions) as s:
            assert (await s.execute(select(func.count(Organisation.id)))).scalar_one() == 1
            s.add(Organisation(name="Second"))
            await s.flush()
            s.add(Organisation(name="Third"))
            await s.flush()
            names = set((await s.execute(select(Organisation.name))).scalars())
        assert names == {"Desk", "Second", "Third"}
        assert threaded == ["commit"]
        async with sessions() as s:  # committed, and seen by another connection
            assert (await s.execute(select(func.count(Organisation.id)))).scalar_one() == 3
    finally:
        await engine.dispose()


async def test_the_loop_runs_on_while_another_connection_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    engine = await _engine(tmp_path)
    held, release = threading.Event(), threading.Event()

    def other_process() -> None:
        conn = sqlite3.connect(tmp_path / "a.db", timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE other_process (a)")
        held.set()
        release.wait(10)
        conn.commit()
        conn.close()

    holder = threading.Thread(target=other_process)
    holder.start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        assert held.wait(10)
        asyncio.get_running_loop().call_later(0.4, release.set)
        started = time.perf_counter()
        async with transaction(sessions) as s:
            s.add(Organisation(name="Ours"))
        waited = time.perf_counter() - started
        async with sessions() as s:
            names = set((await s.execute(select(Organisation.name))).scalars())
    finally:
        release.set()
        ticker.cancel()
        holder.join(10)
        await engine.dispose()
    assert names == {"Ours"}
    assert waited >= 0.35  # it did wait for the lock...
    assert ticks >= 15  # ...on the driver's thread: the loop kept running meanwhile


async def test_nothing_runs_inline_while_the_drivers_thread_still_works(tmp_path: Path) -> None:
    """A write waiting for the lock on the driver's thread, its caller cancelled: the next
    read queues behind it instead of blocking the loop on the connection's mutex."""
    path = tmp_path / "b.db"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (a)")
    setup.commit()
    setup.close()
    driver = await aiosqlite.connect(path, timeout=3, check_same_thread=False)
    run_inline(SimpleNamespace(_connection=driver), None)
    held, release = threading.Event(), threading.Event()

    def other_process() -> None:
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (1)")
        held.set()
        release.wait(10)
        conn.commit()
        conn.close()

    holder = threading.Thread(target=other_process)
    holder.start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        assert held.wait(10)
        write = asyncio.create_task(driver.execute("INSERT INTO t VALUES (2)"))
        await asyncio.sleep(0.1)
        write.cancel()
        threading.Timer(0.4, release.set).start()
        ticks = 0
        rows = await driver.execute_fetchall("SELECT count(*) FROM t")
    finally:
        release.set()
        ticker.cancel()
        holder.join(10)
        await driver.close()
    assert list(rows) == [(2,)]  # the other's row, and ours (uncommitted, on this connection)
    assert ticks >= 15
