"""The dispatcher's claim reads only rows due now (both backends): with a day of Telegram chats'
deletions waiting in the outbox (SECURITY.md R12), a claim or an idle probe that walked every
pending row would cost more the more people use the bot. Each statement must be an index
range on (state, priority, next_attempt_at) that ends at "now"; the database's own plan says
whether it is."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.crypto import Vault
from core.dispatch import _PROBE, Dispatcher
from core.models import OutboxMessage, OutboxState
from tests.engine.conftest import T0


class Caught(Exception):
    """What the driver would have been given: the SQL and its parameters."""


async def plan(engine: AsyncEngine, backend: str, stmt: Any, now: Any = T0) -> str:
    """The database's plan for ``stmt`` with the claim's parameters."""

    def catch(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        raise Caught(statement, params)

    async with engine.connect() as conn:
        event.listen(engine.sync_engine, "before_cursor_execute", catch)
        try:
            await conn.execute(stmt, {"now": now, "names": ["telegram", "signal"]})
        except Exception as exc:  # the driver error wraps it on some paths
            caught = exc if isinstance(exc, Caught) else exc.__cause__ or exc.__context__
            assert isinstance(caught, Caught), exc
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", catch)
        sql, params = caught.args
        if backend == "postgresql":
            found = await conn.exec_driver_sql("EXPLAIN " + sql, params)
        else:
            found = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(" ".join(str(c) for c in row) for row in found.all())


async def fill(engine: AsyncEngine) -> None:
    """An outbox as a busy day leaves it: Telegram deletions waiting for tomorrow, a few rows
    being sent, many delivered; then the statistics the planner chooses by (a near-empty,
    unanalysed table lets PostgreSQL pick any index on ``state``)."""
    rows: list[dict[str, Any]] = []

    def add(n: int, state: OutboxState, priority: int, due: timedelta, **more: Any) -> None:
        for i in range(n):
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "priority": priority,
                    "channel": "telegram",
                    "idempotency_key": f"{state}:{priority}:{len(rows)}",
                    "state": state,
                    "attempts": 0,
                    "next_attempt_at": T0 + due + timedelta(seconds=i),
                    "created_at": T0 - timedelta(days=1) + timedelta(seconds=len(rows)),
                    "lease_owner": None,
                    "lease_until": None,
                    **more,
                }
            )

    add(2000, OutboxState.pending, 3, timedelta(hours=2))  # deletions due later
    add(20, OutboxState.pending, 2, timedelta(seconds=-5))  # a few due now
    add(20, OutboxState.sending, 1, timedelta(0), lease_owner="x", lease_until=T0)
    add(2000, OutboxState.delivered, 2, -timedelta(hours=5))
    async with engine.begin() as conn:
        await conn.execute(insert(OutboxMessage), rows)
        await conn.exec_driver_sql("ANALYZE")


async def test_each_claim_statement_is_an_index_range_ending_now(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, backend: str, vault: Vault
) -> None:
    await fill(engine)
    d = Dispatcher(sessions, vault, {}, owner="t", limits={})
    # The probes also look for expired leases: a read by state only (few rows are being sent).
    statements = [*((s, 0) for s in d._pick.values()), (_PROBE[None], 1), (_PROBE[0], 1)]
    for stmt, leases in statements:
        shown = await plan(engine, backend, stmt)
        assert "ix_outbox_pending" in shown, shown
        if backend == "sqlite":
            reads = [line for line in shown.splitlines() if " outbox " in line]
            ranges = [r for r in reads if "state=? AND priority=? AND next_attempt_at<?" in r]
            assert len(ranges) == len(reads) - leases, shown
            assert all("USING INDEX ix_outbox_pending" in line for line in ranges), shown
            assert not any(line.split()[3:5] == ["SCAN", "outbox"] for line in reads), shown
            assert "TEMP B-TREE" not in shown, shown
        else:  # the bounds are the index's condition, never a filter over what it found
            assert "priority =" in shown and "next_attempt_at <=" in shown, shown
            filtered = [line for line in shown.splitlines() if "Filter:" in line]
            assert not any("next_attempt_at" in line for line in filtered), shown
            assert "Seq Scan" not in shown, shown
