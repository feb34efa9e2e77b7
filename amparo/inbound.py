"""The inbound side of ``amparo serve``: each configured channel feeds the flow engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta

from fastapi import FastAPI

from amparo.runtime import Runtime
from bot.telegram import Telegram
from core.messages import Channel
from core.models import utcnow
from flows.engine import Engine, housekeeping

log = logging.getLogger("amparo.inbound")
HOUSEKEEPING_EVERY = timedelta(minutes=5)


def mount_webhooks(app: FastAPI, channels: Mapping[str, Channel]) -> None:
    """Telegram's webhook route (DESIGN.md: ``/hooks/telegram``), when webhook mode is on."""
    telegram = channels.get("telegram")
    if isinstance(telegram, Telegram) and telegram.webhook_url:
        app.add_api_route(
            "/hooks/telegram", telegram.webhook, methods=["POST"], include_in_schema=False
        )


async def _receive(channel: Channel, engine: Engine) -> None:
    while True:  # a channel that fails comes back; the others keep running meanwhile
        try:
            await channel.run(engine.handle)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "channel stopped", extra={"channel": channel.name, "error": type(exc).__name__}
            )
            await asyncio.sleep(5)


async def _housekeeping(rt: Runtime) -> None:
    while True:
        try:
            await housekeeping(rt.sessions, utcnow())
        except Exception as exc:
            log.error("housekeeping failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(HOUSEKEEPING_EVERY.total_seconds())


@contextlib.asynccontextmanager
async def receiving(rt: Runtime, channels: Mapping[str, Channel]) -> AsyncIterator[None]:
    engine = Engine(rt.sessions, rt.vault)
    tasks = [asyncio.create_task(_receive(c, engine)) for c in channels.values()]
    tasks.append(asyncio.create_task(_housekeeping(rt)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
