"""APScheduler drives the sweep: one periodic job plus a one-shot wake-up at the next due time.

The database stays the only source of truth (LIBRARIES.md §3): the jobs live in APScheduler's
memory store and only say *when* to look. ``misfire_grace_time=None`` means a late run still
runs (APScheduler would otherwise drop a run more than 1 s late); ``max_instances=1`` and a lock
keep sweeps of this process from overlapping. Commits in this process that arm an earlier timer
move the wake-up forward (``core.wakeup``); other processes' timers are seen at the next
periodic sweep. After each successful sweep an optional heartbeat URL is pinged, so an outside
monitor notices a worker that died or stopped sweeping (SECURITY.md R27).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from core import metrics, sweep, wakeup
from core.proxies import proxy_for
from core.sweep import Sweep
from core.webhooks import drain

log = logging.getLogger("amparo.scheduler")
JOB = {"misfire_grace_time": None, "max_instances": 1, "coalesce": True, "replace_existing": True}


class Scheduler:
    def __init__(
        self,
        sweeper: Sweep,
        *,
        interval_s: float = 5.0,
        heartbeat_url: str | None = None,
        heartbeat_every_s: float = 30.0,
        http: aiohttp.ClientSession | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sweeper, self.interval_s, self.clock = sweeper, interval_s, clock
        self.heartbeat_url, self.heartbeat_every_s, self.http = (
            heartbeat_url,
            heartbeat_every_s,
            http,
        )
        self.aps = AsyncIOScheduler(timezone=UTC)
        self.lock = asyncio.Lock()
        self.last_sweep: datetime | None = None
        self.last_ping = -float("inf")
        self.ping_task: asyncio.Task[None] | None = None
        self.wake_at: datetime | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.stopping = False

    def start(self) -> None:
        """Must be called in the running loop; the first sweep runs at once."""
        loop = asyncio.get_running_loop()
        self.aps.add_job(
            self.tick,
            "interval",
            seconds=self.interval_s,
            id="sweep",
            next_run_time=self.clock(),
            **JOB,
        )
        self.aps.start()

        def earlier(at: datetime | None) -> None:
            if at is not None:
                loop.call_soon_threadsafe(self.plan, at)

        self._unsubscribe = wakeup.subscribe(wakeup.TIMERS, earlier)

    async def stop(self) -> None:
        """Let a running sweep finish its transaction, then stop."""
        self.stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        async with self.lock:
            if self.aps.running:
                self.aps.shutdown(wait=False)
                await asyncio.sleep(0)  # shutdown is posted to the loop
        if self.ping_task is not None:
            self.ping_task.cancel()

    def plan(self, at: datetime) -> None:
        """A one-shot sweep at ``at`` unless one is planned sooner (or the periodic one is)."""
        now = self.clock()
        at = max(at, now + timedelta(milliseconds=20))
        if at >= now + timedelta(seconds=self.interval_s):
            return
        if self.wake_at is not None and now < self.wake_at <= at:
            return
        self.wake_at = at
        self.aps.add_job(self.tick, "date", run_date=at, id="wake", **JOB)

    async def tick(self) -> None:
        async with self.lock:
            if self.stopping:
                return
            now = self.clock()
            metrics.sweeps["runs"] += 1
            try:
                await self.sweeper.run(now)
                async with self.sweeper.sessions() as session:
                    nxt = await sweep.earliest(session, after=now)
            except Exception:  # the next tick tries again; the lag shows on /healthz
                metrics.sweeps["failures"] += 1
                log.exception("sweep failed")
                return
            self.last_sweep = now
            if nxt is not None:
                self.plan(nxt)
            self.heartbeat()

    def heartbeat(self) -> None:
        if self.heartbeat_url is None or self.http is None:
            return
        moment = time.monotonic()
        if moment - self.last_ping < self.heartbeat_every_s:
            return
        if self.ping_task is not None and not self.ping_task.done():
            return
        self.last_ping = moment
        self.ping_task = asyncio.create_task(self._ping(self.heartbeat_url, self.http))

    @staticmethod
    async def _ping(url: str, http: aiohttp.ClientSession) -> None:
        try:
            limit = aiohttp.ClientTimeout(total=10)
            async with http.get(url, timeout=limit, proxy=proxy_for(url)) as answer:
                await drain(answer)
        except (
            aiohttp.ClientError,
            TimeoutError,
        ) as exc:  # the URL may hold a secret: never logged
            log.warning("heartbeat ping failed: %s", type(exc).__name__)
