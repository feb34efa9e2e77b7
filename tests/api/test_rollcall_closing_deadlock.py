"""PostgreSQL aborts a roll-call's closing to break a deadlock (40P01): the sweep closes it
again at once, its ``rollcall.closed`` event queued once. It used to end the sweep (the
roll-calls after it waited for the next tick). Both backends (``tests.deadlocks``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import rollcall_closing
from core.models import Broadcast, OutboxMessage
from tests.api.conftest import Desk
from tests.api.test_rollcalls_race import NOW, counted, setup
from tests.deadlocks import deadlock


async def test_a_closing_aborted_by_a_deadlock_is_run_again(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, _defender_id = await setup(desk)
    real, left = rollcall_closing.close, [1]

    async def aborted(session: AsyncSession, *args: Any, **kwargs: Any) -> bool:
        done = await real(session, *args, **kwargs)  # closed and its event queued, then aborted
        if left[0] > 0:
            left[0] -= 1
            await deadlock(session)
        return done

    monkeypatch.setattr(rollcall_closing, "close", aborted)
    closed = await rollcall_closing.close_due(desk.sessions, desk.vault, NOW + timedelta(hours=1))
    assert (closed, left) == (1, [0])
    async with desk.sessions() as s:
        assert (await s.get_one(Broadcast, r.id)).closed_at is not None
        stmt = select(OutboxMessage.idempotency_key).where(
            OutboxMessage.idempotency_key.startswith(f"rc:{r.id.hex}")
        )
        keys = list((await s.execute(stmt)).scalars())
    assert keys and len(keys) == len(set(keys))
    assert await counted(desk, r.id) == {"safe": 0, "help": 0, "unanswered": 1}
