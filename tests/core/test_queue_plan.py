"""The desk's queue reads one page whatever its filter: filtered by a kind or a priority that
is rare (an identity_changed alert among a million), it once walked every alert of the
organisation looking for 51 (a second a page at 1,000,000 alerts, on the event loop)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import _bound
from core.desk_alerts import _queue_query

FILTERS = {
    "ix_alerts_org_recent": {},
    "ix_alerts_org_state_recent": {"state": "triggered"},
    "ix_alerts_org_kind_recent": {"kind": "identity_changed"},
    "ix_alerts_org_priority_recent": {"priority": 3},
}


async def test_each_filter_of_the_queue_has_its_index(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s:
        conn = await s.connection()
        if conn.dialect.name != "sqlite":  # PostgreSQL plans from statistics: the indexes
            found = await conn.execute(text("SELECT indexname, indexdef FROM pg_indexes"))
            indexes = dict(found.all())
            for name in FILTERS:
                assert name in indexes
            assert "(org_id, kind, triggered_at, id)" in indexes["ix_alerts_org_kind_recent"]
            return
        for index, filters in FILTERS.items():
            for after in (False, True):  # the first page, and the pages after it
                query = _queue_query(
                    "state" in filters, "kind" in filters, "priority" in filters, after
                )
                params = {"org_id": uuid.uuid4(), "limit": 51, **filters}
                if after:
                    params |= {
                        "after_at": datetime(2026, 12, 6, tzinfo=UTC),
                        "after_id": uuid.uuid4(),
                    }
                sql, values = _bound(query, conn.dialect, params)
                plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, tuple(values))
                steps = " | ".join(r[3] for r in plan)
                assert f"SEARCH alerts USING INDEX {index} " in steps, (filters, after, steps)
                assert "TEMP B-TREE" not in steps  # read in the index's order: no sort
