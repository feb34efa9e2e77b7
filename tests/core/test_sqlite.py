"""core.sqlite: which aiosqlite calls run on the event loop's thread, and that the loop never
waits there for another connection's lock. SQLite only: PostgreSQL's driver has no thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.db import create_engine, dispose, transaction
from core.models import Organisation
from core.sqlite import BULK, kind, off_loop, reader, run_inline


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


@pytest.fixture
def threaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the calls aiosqlite sends to its thread from now on."""
    calls: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", "?"))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


async def test_a_transaction_goes_to_the_drivers_thread_only_to_commit(
    tmp_path: Path, threaded: list[str]
) -> None:
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


async def test_sqlite_ends_only_the_transactions_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only session costs no COMMIT or ROLLBACK round trip to aiosqlite's thread; a
    write is still committed, and a failed write still rolled back (core.sqlite.skip_idle_ends)."""
    ends: list[str] = []
    for name in ("commit", "rollback"):
        original = getattr(aiosqlite.Connection, name)

        async def counted(self: aiosqlite.Connection, _o: Any = original, _n: str = name) -> None:
            ends.append(_n)
            await _o(self)

        monkeypatch.setattr(aiosqlite.Connection, name, counted)
    engine = await _engine(tmp_path)
    try:
        sessions = async_sessionmaker(engine)
        async with transaction(sessions) as s:  # the pool's connection is warm from here
            s.add(Organisation(name="Desk"))
        ends.clear()
        for _ in range(3):
            async with transaction(sessions) as s:
                assert (await s.execute(select(Organisation.name))).scalar_one() == "Desk"
        assert ends == []
        async with transaction(sessions) as s:
            s.add(Organisation(name="Second"))
        assert ends == ["commit"]
        with pytest.raises(RuntimeError):
            async with transaction(sessions) as s:
                s.add(Organisation(name="Gone"))
                await s.flush()
                raise RuntimeError("boom")
        assert ends == ["commit", "rollback"]
        async with sessions() as s:
            names = set((await s.execute(select(Organisation.name))).scalars())
        assert names == {"Desk", "Second"}
    finally:
        await engine.dispose()


class Loop:
    """Counts the event loop's 10 ms ticks: a loop blocked in a call does not tick."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1


@asynccontextmanager
async def lock_held(path: Path, sql: str, seconds: float) -> AsyncIterator[Loop]:
    """Another connection (on a thread, as another process would) runs ``sql`` and holds
    SQLite's write lock for ``seconds`` from now on; meanwhile the loop's ticks are counted."""
    held, release = threading.Event(), threading.Event()

    def other_process() -> None:
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql)
        held.set()
        release.wait(10)
        conn.commit()
        conn.close()

    holder = threading.Thread(target=other_process)
    holder.start()
    loop = Loop()
    ticker = asyncio.create_task(loop.run())
    try:
        assert held.wait(10)
        threading.Timer(seconds, release.set).start()  # even if the loop is blocked
        yield loop
    finally:
        release.set()
        ticker.cancel()
        holder.join(10)


async def test_the_loop_runs_on_while_another_connection_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    engine = await _engine(tmp_path)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with lock_held(tmp_path / "a.db", "CREATE TABLE other_process (a)", 0.4) as loop:
            started = time.perf_counter()
            async with transaction(sessions) as s:
                s.add(Organisation(name="Ours"))
            waited = time.perf_counter() - started
        async with sessions() as s:
            names = set((await s.execute(select(Organisation.name))).scalars())
    finally:
        await engine.dispose()
    assert names == {"Ours"}
    assert waited >= 0.35  # it did wait for the lock...
    assert loop.ticks >= 15  # ...on the driver's thread: the loop kept running meanwhile


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
    try:
        async with lock_held(path, "INSERT INTO t VALUES (1)", 0.5) as loop:
            write = asyncio.create_task(driver.execute("INSERT INTO t VALUES (2)"))
            await asyncio.sleep(0.1)
            write.cancel()
            loop.ticks = 0
            rows = await driver.execute_fetchall("SELECT count(*) FROM t")
    finally:
        await driver.close()
    assert list(rows) == [(2,)]  # the other's row, and ours (uncommitted, on this connection)
    assert loop.ticks >= 15


async def test_off_loop_sends_every_call_to_the_thread_until_it_ends(
    tmp_path: Path, threaded: list[str]
) -> None:
    engine = await _engine(tmp_path)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as s:
            await s.execute(select(func.count(Organisation.id)))  # the connection is warm
            threaded.clear()
            async with off_loop(s):
                await s.execute(select(func.count(Organisation.id)))
            assert threaded and "execute" in threaded  # the read went to the thread
            threaded.clear()
            await s.execute(select(func.count(Organisation.id)))
            assert threaded == []  # and the connection reads inline again afterwards
    finally:
        await engine.dispose()


async def test_the_hot_reader_only_reads_and_closes_with_its_engine(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Organisation.metadata.create_all)
    conn = reader(engine.sync_engine)
    assert conn is not None and reader(engine.sync_engine) is conn  # one per thread, kept
    assert conn.execute("SELECT count(*) FROM organisations").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM organisations")  # query_only: it can never write
    other: list[sqlite3.Connection | None] = []
    thread = threading.Thread(target=lambda: other.append(reader(engine.sync_engine)))
    thread.start()
    thread.join()
    assert other[0] is not None and other[0] is not conn
    await dispose(engine)
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    memory = create_engine("sqlite+aiosqlite://")
    assert reader(memory.sync_engine) is None  # another connection would be another database
    await dispose(memory)
