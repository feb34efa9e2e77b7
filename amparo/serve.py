"""``amparo serve``: the desk API, the scheduler, the dispatcher and the channels, one process;
``amparo api``: the desk API alone, for deployments that run ``amparo worker`` beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn
from fastapi import FastAPI

from amparo.inbound import mount_webhooks, receiving
from amparo.runtime import open_runtime
from amparo.worker import build_channels, run_engine
from api.app import create_app
from bot.telegram import Telegram
from core import logs
from core.config import Settings

log = logging.getLogger("amparo")


def _config(
    app: FastAPI, settings: Settings, host: str | None, port: int | None
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,  # our handlers, with redaction
        access_log=False,  # paths can carry ids; the desk's own audit log records actions
        server_header=False,
    )


async def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    logs.configure(settings.log_level)
    async with open_runtime(settings) as rt:
        app = create_app(settings, rt.engine, rt.vault)
        config = _config(app, settings, host, port)
        channels = build_channels(rt)
        mount_webhooks(app, channels)
        log.info("serving the desk", extra={"port": config.port, "channels": sorted(channels)})
        engine = asyncio.create_task(run_engine(rt, channels))
        try:
            async with receiving(rt, channels):
                await uvicorn.Server(config).serve()
        finally:
            engine.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await engine


async def api(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """The desk API and, in Telegram's webhook mode, ``/hooks/telegram``: updates go through
    the flows into the outbox, and the workers deliver. No sweep, no dispatcher, no polling
    (one poller per bot: that is ``amparo serve``'s job)."""
    logs.configure(settings.log_level)
    async with open_runtime(settings) as rt:
        app = create_app(settings, rt.engine, rt.vault)
        config = _config(app, settings, host, port)
        hooked = {
            name: channel
            for name, channel in build_channels(rt).items()
            if isinstance(channel, Telegram) and channel.webhook_url
        }
        mount_webhooks(app, hooked)
        log.info("serving the desk API", extra={"port": config.port, "channels": sorted(hooked)})
        async with receiving(rt, hooked):
            await uvicorn.Server(config).serve()
