"""Inserts of thousands of rows: bound by hand, so the costly part can come before the lock.

SQLAlchemy binds an executemany's rows itself, each value through its column's processor, on
the event loop and inside the caller's transaction: on SQLite, with the one write lock held.
``BulkInsert`` compiles the insert once per dialect and binds rows to plain tuples apart from
the statement (a value every row shares converted once), so that a caller can bind before its
first write, in a worker thread if it likes, and the transaction then only runs the statement.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from sqlalchemy import Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

# Driver SQL and its positional values, ready for ``exec_driver_sql``.
Bound = tuple[str, list[tuple[Any, ...]]]
_Compiled = tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]


class BulkInsert:
    """``INSERT INTO table (columns)`` for many rows given as dicts.

    ``shared``: columns whose value is the same for most rows (converted once per distinct
    value); ``raw``: columns both drivers take as they are (bytes); ``skip_conflicts_on``: a
    unique column (or the columns of a unique key) whose clashes are skipped (``ON CONFLICT
    DO NOTHING``), not an error."""

    def __init__(
        self,
        table: Table,
        columns: Sequence[str],
        *,
        shared: Collection[str] = (),
        raw: Collection[str] = (),
        skip_conflicts_on: str | Sequence[str] | None = None,
    ) -> None:
        self.table, self.columns = table, tuple(columns)
        self.shared, self.raw = frozenset(shared), frozenset(raw)
        on = skip_conflicts_on
        self.conflict = None if on is None else [on] if isinstance(on, str) else list(on)
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        """The insert as driver SQL and, per parameter in order, its bind processor."""
        found = self._compiled.get(dialect.name)
        if found is None:
            values: dict[str, Any] = {c: bindparam(c) for c in self.columns}
            stmt: Any
            if dialect.name == "postgresql":
                stmt = postgresql.insert(self.table).values(values)
            else:
                stmt = sqlite.insert(self.table).values(values)
            if self.conflict is not None:
                stmt = stmt.on_conflict_do_nothing(index_elements=self.conflict)
            compiled = stmt.compile(dialect=dialect)
            order = list(compiled.positiontup or ())
            assert sorted(order) == sorted(self.columns)
            procs = [
                (c, None if c in self.raw else self.table.c[c].type.bind_processor(dialect))
                for c in order
            ]
            found = self._compiled[dialect.name] = (compiled.string, procs)
        return found

    def bind(self, dialect: Dialect, rows: Sequence[dict[str, Any]]) -> Bound:
        """The rows as the driver takes them: no database needed (a worker thread may)."""
        sql, procs = self.compiled(dialect)
        columns = []
        for name, proc in procs:
            values: list[Any] = [r[name] for r in rows]
            if proc is not None:
                if name in self.shared:
                    memo: dict[Any, Any] = {}
                    values = [
                        memo[v] if v in memo else memo.setdefault(v, proc(v)) for v in values
                    ]
                else:
                    values = [None if v is None else proc(v) for v in values]
            columns.append(values)
        return sql, list(zip(*columns, strict=True))


async def run(session: AsyncSession, bound: Bound) -> None:
    """Insert rows bound by ``BulkInsert.bind``, in the session's transaction."""
    sql, values = bound
    if values:
        conn = await session.connection()
        await conn.exec_driver_sql(sql, values)
