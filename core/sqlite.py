"""SQLite through aiosqlite: pragmas, and fewer round trips to the driver's thread.

aiosqlite runs every call (cursor, execute, fetch, close, commit) on its own thread and hands
the result back through the event loop: a statement is three or four such hops, and each waits
behind whatever else the loop is running. A flow's transaction of eight statements spent most
of its time in those waits, with SQLite's one write lock held (bench/telegram_pipeline.py).

So the calls that cannot wait for a lock run on the loop's thread, at once:
- reads (``SELECT``): in WAL mode a reader never waits for a writer;
- a cursor's creation, fetches and close: no lock is taken there;
- writes in a transaction that already holds the write lock (an earlier write of it succeeded):
  nobody else can hold the lock meanwhile;
- the first write of a transaction too, with SQLite's busy timeout at zero: if another
  connection holds the lock, SQLite says so at once (the statement did nothing) and the write
  goes to the driver's thread to wait there, never blocking the loop.
The rest stays on the driver's thread: ``COMMIT`` (it may checkpoint, which writes and syncs
the database file), ``ROLLBACK``, ``BEGIN``, pragmas, DDL.
Bulk statements (over ``BULK`` rows or values) go to the thread too: there their sqlite3 work
overlaps the loop's Python. Nothing runs inline while the thread still has a call of this
connection (one whose caller was cancelled): the two would share the connection's mutex.
A statement's own cost still runs on the loop's thread: keep hot reads indexed and paged,
and put work whose statements may be long (maintenance) in ``off_loop``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncSession

_STATEMENTS = {"execute", "executemany", "_execute_fetchall", "_execute_insert"}
_CURSOR_ONLY = {"cursor", "fetchone", "fetchmany", "fetchall"}
_WRITES = {"INSERT", "UPDATE", "DELETE", "REPLACE"}
BULK = 200  # parameters (or rows) beyond which a statement goes to the driver's thread
# Hot reads' connections: per engine, one per thread that reads (``reader``).
_readers: WeakKeyDictionary[Engine, dict[int, sqlite3.Connection]] = WeakKeyDictionary()


def pragmas(dbapi_conn: Any, _record: Any) -> None:
    # aiosqlite's adapter opens an implicit transaction lazily; pragmas must run outside one.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Deleted rows are overwritten, not left in free pages of the file (R17, R25). Debian's
    # SQLite does it by default; other builds do not.
    cursor.execute("PRAGMA secure_delete=ON")
    # Pages a connection keeps (SQLite's default: 2 MiB). A spike's batches touch index pages
    # all over a large database; with 16 MiB, 1,000,000 armed, the sweep spent about a fifth
    # less time in the kernel reading them again. It is per connection and filled only as
    # pages are read, each connection with its own copies: at worst 16 MiB times the pool's
    # connections (core.db), if each read that many pages of its own.
    cursor.execute("PRAGMA cache_size=-16384")
    cursor.close()


def reader(engine: Engine) -> sqlite3.Connection | None:
    """This thread's read-only connection to ``engine``'s SQLite file, for hot reads that need
    no transaction of their own (core.db.fetch_hot); None for any other database (PostgreSQL,
    in-memory SQLite, a URL with options). Opened at first use, kept as long as the engine is
    (or until ``close_readers``). In autocommit, each statement reads what was committed when
    it starts (WAL: no writer is waited for). ``query_only``: it can never write."""
    if engine.dialect.driver != "aiosqlite":
        return None
    per_thread = _readers.get(engine)
    if per_thread is None:
        url = engine.url
        if url.database in (None, "", ":memory:") or url.query:
            return None
        per_thread = _readers[engine] = {}
    conn = per_thread.get(threading.get_ident())
    if conn is None:
        path = engine.url.database
        assert path is not None
        conn = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA cache_size=-16384")  # as the pool's connections (``pragmas``)
        per_thread[threading.get_ident()] = conn
    return conn


def close_readers(engine: Engine) -> None:
    """Close ``engine``'s hot-read connections (with its pool, at shutdown)."""
    for conn in _readers.pop(engine, {}).values():
        conn.close()


def _verb(sql: object) -> str:
    words = sql.lstrip()[:8].split(maxsplit=1) if isinstance(sql, str) else []
    return words[0].upper() if words else ""


def _bulk(parameters: object) -> bool:
    """Many rows (executemany's sequence, or one statement's many values)."""
    try:
        return len(parameters) > BULK  # type: ignore[arg-type]
    except TypeError:  # an iterator: its size is unknown
        return True


def kind(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """``free`` (no lock can be waited for), ``write`` (DML), or ``queued``."""
    name = getattr(fn, "__name__", "")
    owner = getattr(fn, "__self__", None)
    if name in _CURSOR_ONLY or (name == "close" and isinstance(owner, sqlite3.Cursor)):
        return "free"
    if name in _STATEMENTS and args:
        if len(args) > 1 and _bulk(args[1]):
            return "queued"  # its sqlite3 work overlaps the loop's Python there
        verb = _verb(args[0])
        if verb == "SELECT":
            return "free"
        if verb in _WRITES:
            return "write"
    return "queued"


def run_inline(dbapi_conn: Any, _record: Any) -> None:
    """Route a new aiosqlite connection's calls as the module says (a ``connect`` listener)."""
    driver: Any = getattr(dbapi_conn, "_connection", None)  # aiosqlite.Connection
    queued = getattr(driver, "_execute", None)
    if queued is None:
        return
    writing = False  # this transaction holds SQLite's write lock
    timeout_ms = -1  # the connection's busy timeout, read once
    # Calls handed to the thread, and calls it finished (each written by one thread only):
    # one cancelled while the thread still runs it must not have company on the connection.
    sent, done = 0, 0

    def finishing(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal done
            try:
                return fn(*args, **kwargs)
            finally:
                done += 1

        return call

    async def execute(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal writing, timeout_ms, sent
        conn: sqlite3.Connection | None = driver._connection
        if conn is None or not driver._running or sent != done or getattr(driver, _OFF, False):
            sent += 1
            return await queued(finishing(fn), *args, **kwargs)
        if not conn.in_transaction:
            writing = False
        how = kind(fn, args)
        if how == "free" or (how == "write" and writing):
            return fn(*args, **kwargs)
        if how == "write":  # the lock is free: take it here; held by another: wait there
            if timeout_ms < 0:
                timeout_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
            try:
                result = _without_waiting(conn, timeout_ms, fn, args, kwargs)
            except _Busy:
                pass
            else:
                writing = conn.in_transaction
                return result
        sent += 1
        result = await queued(finishing(fn), *args, **kwargs)
        writing = how == "write" and conn.in_transaction
        return result

    driver._execute = execute


_OFF = "amparo_off_loop"  # set on an aiosqlite connection by ``off_loop``


@asynccontextmanager
async def off_loop(session: AsyncSession) -> AsyncIterator[None]:
    """Within: every call of the session's connection goes to the driver's thread, as
    aiosqlite does by itself. For work whose statements may each take long (the retention
    purge: deletes of however many rows are due): on the loop they would stop everything else
    the process does, the escalation sweep and the outbox included. A no-op on other drivers."""
    conn = await session.connection()
    driver = (await conn.get_raw_connection()).driver_connection
    if conn.dialect.driver != "aiosqlite" or driver is None:
        yield
        return
    setattr(driver, _OFF, True)
    try:
        yield
    finally:
        setattr(driver, _OFF, False)


class _Busy(Exception):
    pass


def _without_waiting(
    conn: sqlite3.Connection,
    timeout_ms: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Any,
) -> Any:
    """``fn`` with SQLite's busy timeout at zero: ``_Busy`` at once if another connection
    holds the write lock (the statement then did nothing), instead of waiting for it."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        return fn(*args, **kwargs)
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
            raise _Busy from None
        raise
    finally:
        # A pragma takes no bound parameter; timeout_ms is the integer SQLite gave us.
        conn.execute(  # nosemgrep: raw-sql-from-a-formatted-string
            f"PRAGMA busy_timeout = {timeout_ms}"
        )


def skip_idle_ends(dialect: Dialect) -> None:
    """COMMIT and ROLLBACK with no transaction open are no-ops in sqlite3, but each is still a
    round trip to aiosqlite's thread (and a GIL hand-over): a read-only request paid two
    (the session's commit, the pool's reset). Skipped when SQLite says none is open; the
    flag is read between statements, never while the connection's thread runs one."""
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def idle(dbapi_conn: Any) -> bool:
        adapted = getattr(dbapi_conn, "dbapi_connection", dbapi_conn)  # a pool's fairy, or not
        driver = getattr(adapted, "_connection", None)  # aiosqlite.Connection
        conn = getattr(driver, "_connection", None)  # sqlite3.Connection, None once closed
        return conn is not None and not conn.in_transaction

    def do_commit(dbapi_conn: Any) -> None:
        if not idle(dbapi_conn):
            commit(dbapi_conn)

    def do_rollback(dbapi_conn: Any) -> None:
        if not idle(dbapi_conn):
            rollback(dbapi_conn)

    setattr(dialect, "do_commit", do_commit)  # noqa: B010  (an instance's own, not the class's)
    setattr(dialect, "do_rollback", do_rollback)  # noqa: B010
