"""``amparo serve``: the desk API (and, as they land, scheduler and channels) in one process."""

from __future__ import annotations

import logging

import uvicorn

from amparo.runtime import open_runtime
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
        log.info("serving the desk", extra={"port": config.port})
        await uvicorn.Server(config).serve()
