"""The idle sweep's probe reads the due index up to now, whatever the statistics say (both
backends): with check-ins due all through the week, PostgreSQL may expect a due row among the
first few it reads and scan the table for one; when none is due it reads all of them, every
sweep (a million check-ins: the idle sweep's cost would grow with N)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from core.models import CheckIn, CheckInKind, CheckInState
from core.sweep import due_probe
from tests.engine.conftest import T0, World
from tests.engine.test_dispatch_plan import plan


async def test_the_idle_probe_is_an_index_range_ending_now(
    engine: AsyncEngine, backend: str, world: World
) -> None:
    rows: list[dict[str, Any]] = []
    for n, state in enumerate([CheckInState.armed] * 3000 + [CheckInState.met] * 1000):
        due = T0 + timedelta(minutes=n * 3)  # spread over the week ahead...
        if state is CheckInState.met:
            due = T0 - timedelta(days=1, minutes=n)  # ...and the ones met, behind
        rows.append(
            {
                "id": uuid.uuid4(),
                "defender_id": world.defender_id,
                "kind": CheckInKind.timer,
                "due_at": due,
                "next_action_at": due,
                "state": state,
            }
        )
    async with engine.begin() as conn:
        await conn.execute(insert(CheckIn), rows)
        await conn.exec_driver_sql("ANALYZE")
    for state in (CheckInState.armed, CheckInState.reminded):
        for now in (T0 - timedelta(hours=1), T0 + timedelta(days=3)):  # none due, many due
            shown = await plan(
                engine, backend, due_probe(CheckIn, CheckIn.next_action_at, state), now
            )
            assert "ix_checkins_due" in shown, shown
            if backend == "sqlite":
                assert "state=? AND next_action_at<?" in shown, shown
            else:
                assert "Seq Scan" not in shown, shown
                assert "next_action_at <=" in shown.split("Index Cond:")[1], shown
