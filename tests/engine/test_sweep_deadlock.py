"""PostgreSQL aborts a sweep batch's transaction to break a deadlock (40P01): the batch, its
claim rolled back with it, is run again at once, and the step is taken exactly once. It used
to end the whole sweep with "sweep failed": the step waited for the next tick, the other
states and the roll-calls to close with it. Both backends (``tests.deadlocks``)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from core import actions
from core.models import AlertKind
from core.sweep import Sweep
from tests.deadlocks import deadlock
from tests.engine.conftest import World, alert_of, outbox, timeline
from tests.engine.test_alerts import raise_


async def test_a_batch_aborted_by_a_deadlock_takes_its_step_once(
    world: World, sweep: Sweep, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised = await raise_(world, AlertKind.panic)
    before = {m.key for m in await outbox(world)}
    real, left = actions.perform_many, [1]

    async def aborted(session: AsyncSession, *args: Any, **kwargs: Any) -> None:
        await real(session, *args, **kwargs)  # the steps written, then the abort
        if left[0] > 0:
            left[0] -= 1
            await deadlock(session)

    monkeypatch.setattr(actions, "perform_many", aborted)
    assert raised.next_step_at is not None
    await sweep.run(raised.next_step_at)
    assert left == [0]
    alert = await alert_of(world)
    assert alert is not None and alert.step == raised.step + 1
    steps = [e.detail for e in await timeline(world, alert.id) if e.kind == "step"]
    assert [d["step"] for d in steps if d].count(alert.step) == 1
    queued = [m.key for m in await outbox(world) if m.key not in before]
    assert queued and len(queued) == len(set(queued))
    assert sweep.steps == 1
