"""``amparo serve``: the desk API, the scheduler, the dispatcher and the channels, one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from amparo.inbound import mount_webhooks, receiving
from amparo.runtime import open_runtime
from amparo.worker import build_channels, run_engine
from api.app import create_app
from core import logs
from core.config import Settings

log = logging.getLogger("amparo")


async def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    logs.configure(settings.log_level)
    async with open_runtime(settings) as rt:
        app = create_app(settings, rt.engine, rt.vault)
        config = uvicorn.Config(
            app,
            host=host or settings.host,
            port=port or settings.port,
            log_config=None,  # our handlers, with redaction
            access_log=False,  # paths can carry ids; the desk's own audit log records actions
            server_header=False,
        )
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
