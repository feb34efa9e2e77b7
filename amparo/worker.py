"""``amparo worker``: the scheduler and the outbox dispatcher, without the desk.

Any number of workers (and ``amparo serve``, which runs the same engine) may share one
PostgreSQL database: claims are atomic, so there is no leader to elect.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import uuid
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from amparo.runtime import Runtime, open_runtime
from core import defenders, logs, metrics, ratelimit, retention, sqlite, webhooks
from core.config import Settings
from core.db import transaction
from core.destinations import operator_hosts
from core.dispatch import Dispatcher
from core.messages import Channel
from core.models import utcnow
from core.scheduler import Scheduler
from core.sweep import Sweep

log = logging.getLogger("amparo.worker")
RETENTION_EVERY_S = 600.0


def owner_id() -> str:
    """Who holds a lease: readable in the database when a worker dies holding one."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def build_channels(rt: Runtime) -> dict[str, Channel]:
    """The channels whose settings are present (DESIGN.md: "a channel runs when …")."""
    from bot.signal import Signal
    from bot.telegram import Telegram

    cfg = rt.settings
    channels: dict[str, Channel] = {}
    if cfg.telegram_token is not None:
        secret = cfg.telegram_webhook_secret
        channels["telegram"] = Telegram(
            token=cfg.telegram_token.get_secret_value(),
            api_url=cfg.telegram_api_url,
            sessions=rt.sessions,
            vault=rt.vault,
            webhook_url=cfg.telegram_webhook_url,
            webhook_secret=secret.get_secret_value() if secret else None,
        )
    if cfg.signal_service and cfg.signal_number:
        channels["signal"] = Signal(
            service=cfg.signal_service,
            number=cfg.signal_number,
            known=defenders.defender_lookup(rt.sessions, rt.vault, Signal.name),
        )
    return channels


async def keep_retention(
    sessions: async_sessionmaker[AsyncSession], *, every_s: float = RETENTION_EVERY_S
) -> None:
    """Apply the retention rules (SECURITY.md R25) now and every ``every_s`` seconds."""
    while True:
        try:
            async with transaction(sessions) as session, sqlite.off_loop(session):
                done = await retention.purge(session, now=utcnow())
            if any(done.values()):
                rows = " ".join(f"{rule}:{n}" for rule, n in done.items())  # rule names, counts
                log.info("retention purge", extra={"rows": rows})
        except Exception as exc:
            log.error("retention purge failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(every_s)


def settle() -> None:
    """Exempt what the process has built so far from the garbage collector's scans.

    Modules, the ORM's metadata, the engine and compiled statements live as long as the
    process. An escalation spike allocates rows by the million, and every few thousand
    allocations the collector ran, now and then over all of those long-lived objects: about
    a tenth of a spike's CPU (bench/escalation.py). Frozen, they are no longer walked; they
    are still freed by reference counting should they go."""
    gc.collect()  # today's garbage is freed, not frozen with the rest
    gc.freeze()


async def run_engine(
    rt: Runtime,
    channels: Mapping[str, Channel],
    *,
    owner: str | None = None,
    interval_s: float = 5.0,
    lease_s: float = 30.0,
    send_lease_s: float = 60.0,
) -> None:
    """Sweep and deliver until cancelled; a dead worker's claims expire after the leases."""
    owner = owner or owner_id()
    settings = rt.settings
    if settings.unwatched:
        log.warning(
            "no AMPARO_HEARTBEAT_URL: if this engine stops, nothing outside will notice that "
            "missed check-ins no longer escalate (SECURITY.md R27)"
        )
    public_only, exempt = settings.webhooks_public_only, operator_hosts(settings.heartbeat_url)
    async with webhooks.client(public_only=public_only, exempt=exempt) as http:
        sweeper = Sweep(
            rt.sessions,
            rt.vault,
            owner=owner,
            lease_s=lease_s,
            observe=metrics.lateness.observe,
            clock=utcnow,
        )
        scheduler = Scheduler(
            sweeper, interval_s=interval_s, heartbeat_url=rt.settings.heartbeat_url, http=http
        )
        dispatcher = Dispatcher(
            rt.sessions,
            rt.vault,
            channels,
            owner=owner,
            http=http,
            lease_s=send_lease_s,
            limits=ratelimit.limits(rt.settings.telegram_rate, rt.settings.chat_rate),
        )
        settle()
        scheduler.start()
        purging = asyncio.create_task(keep_retention(rt.sessions))
        log.info("engine running", extra={"owner": owner, "channels": sorted(channels)})
        try:
            await dispatcher.run()
        finally:
            purging.cancel()
            await scheduler.stop()
            for channel in channels.values():  # the connections it sent through
                close = getattr(channel, "close", None)
                if close is not None:
                    await close()


async def worker(settings: Settings) -> None:
    logs.configure(settings.log_level)
    async with open_runtime(settings) as rt:
        task = asyncio.create_task(run_engine(rt, build_channels(rt)))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("worker stopped")
