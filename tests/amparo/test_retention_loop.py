"""The engine runner applies retention by itself: nobody has to remember a cron job."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from amparo.worker import keep_retention
from core import retention
from core.db import transaction
from core.escalation import Policy
from core.models import Alert, AlertKind, AlertState, Defender, Organisation, utcnow


async def test_the_engine_runner_purges_on_start(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as s:
        org = Organisation(name="Desk")
        s.add(org)
        await s.flush()
        defender = Defender(org_id=org.id, handle="calm-otter-3")
        s.add(defender)
        await s.flush()
        alert = Alert(
            org_id=org.id,
            defender_id=defender.id,
            kind=AlertKind.panic,
            priority=0,
            state=AlertState.resolved,
            dedup_key=uuid.uuid4().hex,
            policy_snapshot=Policy().to_json(),
            location_sealed=b"sealed",
            resolved_at=utcnow(),
        )
        s.add(alert)
    task = asyncio.create_task(keep_retention(sessions, every_s=3600))
    try:
        for _ in range(100):
            async with sessions() as s:
                row = await s.get(Alert, alert.id)
                assert row is not None
                if row.location_sealed is None:
                    break
            await asyncio.sleep(0.05)
        assert row is not None and row.location_sealed is None
        assert not task.done()  # it keeps running for the next round
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_purge_leaves_the_event_loop_free(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its statements may scan large tables: on SQLite they run on the driver's thread, not
    on the loop that also runs the sweep and the outbox (elsewhere they never block it)."""
    ran = asyncio.Event()

    async def long_purge(session: AsyncSession, *, now: object) -> dict[str, int]:
        await session.execute(text(SLOW))
        ran.set()
        return {}

    monkeypatch.setattr(retention, "purge", long_purge)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    task = asyncio.create_task(keep_retention(sessions, every_s=3600))
    started = asyncio.get_running_loop().time()
    try:
        await asyncio.wait_for(ran.wait(), 30)
        took = asyncio.get_running_loop().time() - started
    finally:
        for running in (task, ticker):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert took > 0.2  # the statement was long enough to matter …
    assert ticks >= took / 0.01 / 4  # … and the loop kept ticking meanwhile


SLOW = (  # a read of about half a second, on either backend
    "SELECT count(*) FROM (WITH RECURSIVE c(x) AS "
    "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT x FROM c) AS n"
)
