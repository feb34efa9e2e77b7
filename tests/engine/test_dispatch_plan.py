"""The dispatcher's claim reads only rows due now (both backends): with a day of Telegram chats'
deletions waiting in the outbox (SECURITY.md R12), a claim or an idle probe that walked every
pending row would cost more the more people use the bot. Each statement must be an index
range on (state, priority, next_attempt_at) that ends at "now"; the database's own plan says
whether it is."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.crypto import Vault
from core.dispatch import _PROBE, Dispatcher
from tests.engine.conftest import T0


class Caught(Exception):
    """What the driver would have been given: the SQL and its parameters."""


async def plan(engine: AsyncEngine, backend: str, stmt: Any) -> str:
    """The database's plan for ``stmt`` with the claim's parameters."""

    def catch(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        raise Caught(statement, params)

    async with engine.connect() as conn:
        event.listen(engine.sync_engine, "before_cursor_execute", catch)
        try:
            await conn.execute(stmt, {"now": T0, "names": ["telegram", "signal"]})
        except Exception as exc:  # the driver error wraps it on some paths
            caught = exc if isinstance(exc, Caught) else exc.__cause__ or exc.__context__
            assert isinstance(caught, Caught), exc
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", catch)
        sql, params = caught.args
        if backend == "postgresql":  # a near-empty table: make the planner show the index
            await conn.exec_driver_sql("SET enable_seqscan = off")
            found = await conn.exec_driver_sql("EXPLAIN " + sql, params)
        else:
            found = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(" ".join(str(c) for c in row) for row in found.all())


async def test_each_claim_statement_is_an_index_range_ending_now(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, backend: str, vault: Vault
) -> None:
    d = Dispatcher(sessions, vault, {}, owner="t", limits={})
    statements = [*d._pick.values(), _PROBE[None], _PROBE[0]]
    for stmt in statements:
        shown = await plan(engine, backend, stmt)
        assert "ix_outbox_pending" in shown, shown
        if backend == "sqlite":
            assert "state=? AND priority=? AND next_attempt_at<?" in shown, shown
        else:
            assert "priority =" in shown and "next_attempt_at <=" in shown, shown
