"""The real APScheduler wiring and the wake-ups (short real waits, no clock control here)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core import checkins, wakeup, webhooks
from core.db import transaction
from core.dispatch import Dispatcher
from core.messages import Outbound
from core.models import ChannelAddress, CheckIn, CheckInState, Priority
from core.outbox import enqueue
from core.ratelimit import Bucket, Spacing
from core.scheduler import JOB, Scheduler
from core.sweep import Sweep
from tests.engine.conftest import World
from tests.engine.standin import StandIn
from tests.standins.http_receiver import Receiver


async def until(check, seconds: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_it_wakes_up_at_a_new_deadline_instead_of_waiting_for_the_next_sweep(
    world: World, sweep: Sweep
) -> None:
    scheduler = Scheduler(sweep, interval_s=60)  # the periodic sweep would be far too late
    assert JOB["misfire_grace_time"] is None and JOB["max_instances"] == 1
    scheduler.start()
    try:
        await asyncio.sleep(0.2)  # the first sweep, at start
        async with transaction(world.sessions) as s:
            due = datetime.now(UTC) + timedelta(milliseconds=400)
            await checkins.arm_timer(s, defender=await world.defender(s), due_at=due, now=due)

        async def reminded() -> bool:
            async with world.sessions() as s:
                state = await s.scalar(select(CheckIn.state))
            return state is CheckInState.reminded

        assert await until(reminded) < 2.0
    finally:
        await scheduler.stop()


async def test_it_pings_the_heartbeat_after_a_sweep(world: World, sweep: Sweep) -> None:
    async with Receiver(statuses=[200]) as monitor, webhooks.client() as http:
        url = monitor.url("/ping/x")
        scheduler = Scheduler(sweep, interval_s=0.1, heartbeat_url=url, http=http)
        scheduler.start()
        try:
            await asyncio.sleep(0.5)
        finally:
            await scheduler.stop()
    # every sweep, at most every 30 s
    assert [(h.method, h.path) for h in monitor.hits] == [("GET", "/ping/x")]
    assert scheduler.last_sweep is not None


async def test_it_delivers_right_after_commit_not_at_the_next_poll(world: World) -> None:
    channel = StandIn("telegram")
    dispatcher = Dispatcher(
        world.sessions, world.vault, {"telegram": channel}, owner="t", limits={}, idle_s=60
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0.2)  # idle: waiting for a wake-up
        async with transaction(world.sessions) as s:
            to = (
                await s.execute(
                    select(ChannelAddress).where(ChannelAddress.defender_id == world.defender_id)
                )
            ).scalar_one()
            await enqueue(
                s,
                world.vault,
                to=to,
                message=Outbound("hola"),
                priority=Priority.P1,
                key="k1",
                now=datetime.now(UTC),
            )

        async def sent() -> bool:
            return bool(channel.sent)

        assert await until(sent) < 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_it_forgets_marks_of_a_rolled_back_transaction(world: World) -> None:
    calls: list[object] = []
    stop = wakeup.subscribe(wakeup.OUTBOX, calls.append)
    try:
        async with world.sessions() as s, s.begin():
            wakeup.touch(s, wakeup.OUTBOX)
            await s.rollback()
        async with transaction(world.sessions) as s:
            wakeup.touch(s, wakeup.OUTBOX)
    finally:
        stop()
    assert calls == [None]


async def test_it_spaces_sends_per_channel_and_per_recipient() -> None:
    bucket = Bucket(30.0)
    started = time.monotonic()
    for _ in range(45):
        await bucket.take()
    assert time.monotonic() - started >= 0.45  # 30 at once, then 30 per second
    spacing = Spacing(1.0)
    assert spacing.wait("chat") == 0.0 and 0.9 < spacing.wait("chat") <= 1.0
    assert spacing.wait("other chat") == 0.0
