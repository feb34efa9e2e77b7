"""The engine runner applies retention by itself: nobody has to remember a cron job."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from amparo.worker import keep_retention
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
