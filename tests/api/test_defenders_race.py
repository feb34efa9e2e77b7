"""The desk pauses a defender at the moment the defender, coerced, "deletes" their data with
the duress PIN (core.defenders.hide). The desk's request read the defender as active before
the deletion committed, and wrote its status afterwards: "paused" over "hidden". The bot then
knew the defender again (menu, reminders, answers) on the phone their captor holds: the
deletion visibly undone (R8).

The overlap is forced as in test_policies_race: a blocker hides the defender, holding its
row (SQLite: the single writer's lock), while the desk's request starts and waits on a lock
(PostgreSQL)."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from core.claims import dialect, write_lock
from core.db import transaction
from core.defenders import hide
from core.models import Defender, DefenderStatus
from tests.api.conftest import Desk
from tests.engine.test_lock_order import deadlock, overlap


async def status_of(desk: Desk) -> DefenderStatus:
    assert desk.a.defender is not None
    async with desk.sessions() as s:
        found = await s.get(Defender, desk.a.defender.id)
        assert found is not None
        return found.status


async def test_a_pause_at_the_moment_of_a_forced_deletion_leaves_the_defender_hidden(
    desk: Desk,
) -> None:
    assert desk.a.defender is not None
    defender_id = desk.a.defender.id
    me = await desk.client(desk.a, "responder")
    started: list[asyncio.Task[httpx.Response]] = []
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        stmt = select(Defender).where(Defender.id == defender_id)
        if dialect(blocker) == "postgresql":
            stmt = stmt.with_for_update(key_share=True)
        defender = (await blocker.execute(stmt)).scalar_one()
        await hide(blocker, defender=defender)
        await blocker.flush()
        started.append(asyncio.create_task(me.post(f"/api/v1/defenders/{defender_id}/pause")))
        await overlap(desk.sessions, 1, started)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    assert not [e for e in done if isinstance(e, BaseException) and deadlock(e)], done
    paused = done[0]
    assert isinstance(paused, httpx.Response), paused
    assert paused.status_code == 409, paused.text
    assert await status_of(desk) is DefenderStatus.hidden
