"""``amparo serve``: the desk API, the scheduler, the dispatcher and the channels, one process;
``amparo api``: the desk API alone, for deployments that run ``amparo worker`` beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
from collections.abc import Sequence

import uvicorn
import uvloop
from fastapi import FastAPI

from amparo import handoff
from amparo.handoff import HandedServer
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
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
    )


async def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    logs.configure(settings.log_level)
    async with open_runtime(settings) as rt:
        app = create_app(settings, rt.engine, rt.vault)
        config = _config(app, settings, host, port)
        channels = build_channels(rt)
        app.state.channels = channels  # /healthz reports a channel that cannot receive
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


async def api(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
    handed: socket.socket | None = None,
) -> None:
    """The desk API and, in Telegram's webhook mode, ``/hooks/telegram``: updates go through
    the flows into the outbox, and the workers deliver. No sweep, no dispatcher, no polling
    (one poller per bot: that is ``amparo serve``'s job). ``workers`` > 1 runs that many
    processes on one port (see ``_supervise``); ``handed``: this is one of them, served the
    connections its supervisor accepts (amparo.handoff)."""
    if workers > 1:
        await _supervise(settings, host, port, workers)
        return
    logs.configure(settings.log_level)
    async with open_runtime(settings, migrate=False if handed else None) as rt:
        app = create_app(settings, rt.engine, rt.vault)
        config = _config(app, settings, host, port)
        hooked = {
            name: channel
            for name, channel in build_channels(rt).items()
            if isinstance(channel, Telegram) and channel.webhook_url
        }
        mount_webhooks(app, hooked)
        log.info("serving the desk API", extra={"port": config.port, "channels": sorted(hooked)})
        server = uvicorn.Server(config) if handed is None else HandedServer(config, handed)
        async with receiving(rt, hooked):
            await server.serve()


async def _supervise(settings: Settings, host: str | None, port: int | None, n: int) -> None:
    """Several API processes: safe because nothing that must be counted once lives in one
    process's memory (login, export and invite limits are in the database: core.throttle;
    sessions are checked against it on every request). What a process caches is a live API
    token's principal, for at most core.api_tokens.TOKEN_CACHE_TTL after another process revoked it
    (reads only: a request that writes reads the token again, core.desk_sessions.hold_token).
    The database is migrated here once, before any worker starts; if a worker ends, the others
    are stopped too, and the command ends (the service manager restarts it)."""
    logs.configure(settings.log_level)
    async with open_runtime(settings):
        pass
    host = host or settings.host
    try:
        listener = listen(host, port or settings.port)  # port 0: the one it picked
    except OSError as exc:
        log.error("the API port cannot be bound", extra={"error": exc.strerror})
        raise SystemExit(1) from None
    port = listener.getsockname()[1]
    ends = handoff.pairs(n)
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_api_worker, args=(settings, host, port, theirs), daemon=True)
        for _ours, theirs in ends
    ]
    for proc in procs:
        proc.start()
    for _ours, theirs in ends:
        theirs.close()  # the workers hold theirs: when one dies, its end reads as closed
    log.info("started API workers", extra={"workers": n})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ended = asyncio.ensure_future(asyncio.to_thread(_first_end, procs))
    stopping = asyncio.ensure_future(stop.wait())
    spreading = asyncio.ensure_future(handoff.Spreader(listener, [e[0] for e in ends]).run())
    try:
        # The spreader never ends by itself: if it does, nothing is served, so all stop.
        await asyncio.wait([ended, stopping, spreading], return_when=asyncio.FIRST_COMPLETED)
    finally:
        spreading.cancel()
        stopping.cancel()
        listener.close()  # new clients are refused from here: nothing half-accepted
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # uvicorn in the worker shuts down gracefully on SIGTERM
        await asyncio.to_thread(_join, procs)
        await ended
        for ours, _theirs in ends:
            ours.close()
        failed = await _outcome(spreading)
    if failed is not None:
        log.error("accepting connections failed: stopping", extra={"error": failed})
        raise SystemExit(1)
    if not stop.is_set():
        log.error("an API worker ended: stopping", extra={"workers": n})
        raise SystemExit(1)


async def _outcome(task: asyncio.Future[None]) -> str | None:
    """The name of the error ``task`` ended with; None if it was cancelled."""
    try:
        await task
    except asyncio.CancelledError:
        return None
    except Exception as exc:  # reported, and the command ends
        return type(exc).__name__
    return "ended"


def listen(host: str, port: int) -> socket.socket:
    """The API's one listening socket. A port something already listens on is refused."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def _first_end(procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
    multiprocessing.connection.wait([p.sentinel for p in procs])


def _join(procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _api_worker(settings: Settings, host: str, port: int, handed: socket.socket) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(api(settings, host=host, port=port, handed=handed))
