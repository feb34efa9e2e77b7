"""PostgreSQL aborts a dispatcher's transaction to break a deadlock (40P01). Recording what
was sent is run again: it used to be given up ("the leases will expire"), and once the
leases expired every message of the batch, delivered already, was sent a second time. The
claim is run again too (it used to wait for the next pass). Both backends."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import dispatch, withdrawals
from core.crypto import Vault
from tests.deadlocks import deadlock
from tests.engine.conftest import T0
from tests.engine.standin import StandIn
from tests.engine.test_dispatch import MIN, dispatcher, panic, standin_world, states


def once(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """``module.name`` is aborted by a deadlock once, after doing its work."""
    real, left = getattr(module, name), [1]

    async def aborted(session: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        done = await real(session, *args, **kwargs)
        if left[0] > 0:
            left[0] -= 1
            await deadlock(session)
        return done

    monkeypatch.setattr(module, name, aborted)
    return left


async def test_a_record_aborted_by_a_deadlock_is_run_again_and_nothing_goes_twice(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await standin_world(sessions, vault)
    await panic(world)
    main = StandIn("standin")
    d = dispatcher(world, {"standin": main})
    left = once(monkeypatch, dispatch, "record")
    jobs = await d.claim(T0)
    assert jobs
    await d._deliver(jobs, T0)  # a pass of the running loop: sent, then recorded
    assert left == [0]
    await d.drain(T0 + 2 * MIN)  # any lease left would have expired by now
    assert main.sent and max(Counter(main.sent).values()) == 1
    assert (await states(world)).get("sending", 0) == 0


async def test_a_claim_aborted_by_a_deadlock_is_run_again(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await standin_world(sessions, vault)
    await panic(world)
    main = StandIn("standin")
    d = dispatcher(world, {"standin": main})
    left = once(monkeypatch, withdrawals, "behind_alarms")  # the claim's last statement
    sent = await d.dispatch_once(T0)
    assert sent and left == [0]
    assert len(main.sent) == len(set(main.sent)) == sum(1 for _ in main.calls)
