"""Async engine and sessions for SQLite (WAL, foreign keys) and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Select, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from core import sqlite

log = logging.getLogger(__name__)
T = TypeVar("T")

# Connections a SQLite engine keeps open. Beyond the pool, SQLAlchemy opens a connection per
# checkout and closes it on return: a new thread, the pragmas, the schema read again and a cold
# page cache each time. Sixteen sessions at once, each listing the alert queue, cost three to
# four times the CPU per listing with the default pool of five (1.6-2.2 ms against 0.4-0.5).
# An idle connection costs a parked thread and at most its page cache (16 MiB, core.sqlite).
SQLITE_POOL = 16
# PostgreSQL: each new connection is a server process started and authenticated. Ten kept and
# five more at a peak: the same fifteen at most per process as SQLAlchemy's default (5 + 10),
# so a server's max_connections (100 by default) serves as many processes as before.
PG_POOL, PG_OVERFLOW = 10, 5


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    # Bound values (handles, codes, ciphertexts) never reach an exception text or a log line.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        # Some calls run on the loop's thread, the others on aiosqlite's (core.sqlite).
        connect_args = {"timeout": 30, **kwargs.get("connect_args", {})}
        kwargs["connect_args"] = {**connect_args, "check_same_thread": False}
        if "poolclass" not in kwargs and parsed.database not in (None, "", ":memory:"):
            kwargs.setdefault("pool_size", SQLITE_POOL)
            kwargs.setdefault("max_overflow", SQLITE_POOL)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", sqlite.pragmas)
        if parsed.get_driver_name() == "aiosqlite":
            event.listen(engine.sync_engine, "connect", sqlite.run_inline)
            sqlite.skip_idle_ends(engine.sync_engine.dialect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", PG_POOL)
        kwargs.setdefault("max_overflow", PG_OVERFLOW)
    return create_async_engine(url, **kwargs)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error; then the work ``then``
    left for after the commit."""
    async with factory() as session:
        async with session.begin():
            yield session
        await committed(session)


_THEN = "amparo.then"  # session.info: work to run once the transaction has committed


def then(session: AsyncSession, work: Callable[[], Awaitable[object]]) -> None:
    """Run ``work`` once this session's transaction has committed, before its caller goes on:
    ``transaction`` does, after its block, and so does each request of the desk API (api.deps),
    before it answers. For work in transactions of its own that must follow the caller's (a
    broadcast's fan-out beyond its first chunk, core.broadcasts). A rollback forgets it. A
    caller that commits otherwise never runs it: such work must be resumable (the sweep's)."""
    session.info.setdefault(_THEN, []).append(work)


async def committed(session: AsyncSession) -> None:
    """Run the work ``then`` left, once the session's transaction has committed."""
    for work in session.info.pop(_THEN, ()):
        await work()


@event.listens_for(Session, "after_soft_rollback")
def _forget_then(session: Session, previous: Any) -> None:
    if previous.parent is None:  # the whole transaction, not a savepoint inside it
        session.info.pop(_THEN, None)


async def dispose(engine: AsyncEngine) -> None:
    """Close the engine's connections: its pool's and its hot reads' (core.sqlite.reader)."""
    await engine.dispose()
    sqlite.close_readers(engine.sync_engine)


async def ping(engine: AsyncEngine) -> None:
    """Raise if the database cannot answer a trivial query."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


AnySelect = Select[*tuple[Any, ...]]
_Compiled = tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...], dict[str, Any]]
_compiled: dict[tuple[AnySelect, str], _Compiled] = {}


def _compile(statement: AnySelect, dialect: Dialect) -> _Compiled:
    key = (statement, dialect.name)
    found = _compiled.get(key)
    if found is None:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        if "POSTCOMPILE" in compiled.string or set(names) != set(compiled.bind_names.values()):
            raise ValueError("only plain positional parameters can go straight to the driver")
        processors = tuple(
            compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names
        )
        defaults = {n: compiled.binds[n].value for n in names}
        found = _compiled[key] = (compiled.string, names, processors, defaults)
    return found


def _bound(
    statement: AnySelect, dialect: Dialect, params: dict[str, Any]
) -> tuple[str, list[Any]]:
    """The statement's SQL and its positional values, processed as SQLAlchemy would."""
    sql, names, processors, defaults = _compile(statement, dialect)
    values = []
    for name, process in zip(names, processors, strict=True):
        value = params[name] if name in params else defaults[name]
        values.append(value if process is None else process(value))
    return sql, values


async def fetch_raw(
    conn: AsyncConnection, statement: AnySelect, params: dict[str, Any]
) -> Sequence[Sequence[Any]]:
    """The rows of a SELECT in one round trip to the driver, as the driver gives them, in the
    statement's order: no result processing (on SQLite a UUID is its hex text, a timestamp its
    text, a boolean 0 or 1; asyncpg gives objects). The values in ``params`` are processed as
    SQLAlchemy would. ``statement`` must live as long as the process (it keys a cache). For
    the hottest reads only: SQLAlchemy's result typing and its round trips through the
    driver's adapter cost the alert queue more than its query (bench/api.py). On SQLite the
    SELECT runs on the event loop's thread (core.sqlite), so the rows need no packing to
    cross from the driver's thread."""
    sql, values = _bound(statement, conn.dialect, params)
    driver: Any = (await conn.get_raw_connection()).driver_connection
    if conn.dialect.driver == "aiosqlite":
        return await driver.execute_fetchall(sql, values)  # type: ignore[no-any-return]
    if conn.dialect.driver == "asyncpg":
        return list(await driver.fetch(sql, *values))
    return list((await conn.execute(statement, params)).tuples())


async def fetch_hot(
    session: AsyncSession, statement: AnySelect, params: dict[str, Any]
) -> Sequence[Sequence[Any]]:
    """``fetch_raw`` for a read that needs nothing of the session's transaction: it sees what
    was committed when it runs, not the session's own pending writes. On a SQLite file it runs
    on this thread's read-only connection (core.sqlite.reader): no pool checkout, no
    transaction to begin and end, no hop through SQLAlchemy's greenlet bridge, which cost the
    alert queue about half as much as its query (bench/api.py). Elsewhere, ``fetch_raw`` on
    the session's connection."""
    bind = session.bind
    found = sqlite.reader(bind.sync_engine) if isinstance(bind, AsyncEngine) else None
    if found is None or bind is None:
        return await fetch_raw(await session.connection(), statement, params)
    sql, values = _bound(statement, bind.dialect, params)
    return found.execute(sql, values).fetchall()


def unreachable(exc: BaseException) -> bool:
    """The database was down, locked or cut off: every event fails alike for a while (the
    flows' and the channels' test for an error worth waiting out, not one to give up on)."""
    if isinstance(exc, OperationalError | InterfaceError | TimeoutError | OSError):
        return True
    return bool(getattr(exc, "connection_invalidated", False))


# PostgreSQL aborts one of two transactions that wait for each other (deadlock_detected) or
# that cannot both stand as if run one after the other (serialization_failure); its advice is
# to run the aborted one again, whole. SQLite's single writer never raises either.
RETRY_STATES = frozenset({"40P01", "40001"})
RETRY_ATTEMPTS = 3


def retryable(exc: BaseException) -> bool:
    """The database aborted this transaction to let another go on: running it again from the
    start is the cure (a deadlock, a serialization failure). asyncpg's error reaches us as a
    DBAPIError whose ``orig`` carries the SQLSTATE (psycopg's too, as ``sqlstate``/``pgcode``)."""
    if not isinstance(exc, DBAPIError):
        return False
    for error in (exc.orig, getattr(exc.orig, "__cause__", None)):
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if code is not None:
            return code in RETRY_STATES
    return False


async def backoff(attempt: int, rng: Callable[[], float] = random.random) -> None:
    """Before running an aborted transaction again: 10-20 ms, then 20-40 ms (jittered: the
    two that deadlocked must not meet again in step)."""
    await asyncio.sleep(0.01 * 2**attempt * (1 + rng()))


async def retried(work: Callable[[], Awaitable[T]], *, what: str) -> T:
    """``work()`` (one whole transaction), run again up to ``RETRY_ATTEMPTS`` times in all
    while the database aborts it as ``retryable``; the last such error is raised. ``what``
    names the work in the log, which says nothing else (no content, no address)."""
    for attempt in range(RETRY_ATTEMPTS):
        try:
            return await work()
        except DBAPIError as exc:
            if not retryable(exc) or attempt == RETRY_ATTEMPTS - 1:
                raise
            log.warning(
                "transaction aborted by the database; running it again",
                extra={"work": what, "attempt": attempt + 1},
            )
            await backoff(attempt)
    raise AssertionError("RETRY_ATTEMPTS is at least 1")
