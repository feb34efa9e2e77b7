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
from typing import Any

import uvicorn
import uvloop
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
    sockets: list[socket.socket] | None = None,
) -> None:
    """The desk API and, in Telegram's webhook mode, ``/hooks/telegram``: updates go through
    the flows into the outbox, and the workers deliver. No sweep, no dispatcher, no polling
    (one poller per bot: that is ``amparo serve``'s job). ``workers`` > 1 runs that many
    processes on one port (see ``_supervise``)."""
    if workers > 1:
        await _supervise(settings, host, port, workers)
        return
    logs.configure(settings.log_level)
    async with open_runtime(settings, migrate=False if sockets else None) as rt:
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
            await uvicorn.Server(config).serve(sockets=sockets)


async def _supervise(settings: Settings, host: str | None, port: int | None, n: int) -> None:
    """Several API processes: safe because nothing that must be counted once lives in one
    process's memory (login, export and invite limits are in the database: core.throttle;
    sessions are checked against it on every request). What a process caches is a live API
    token's principal, for at most core.auth.TOKEN_CACHE_TTL after another process revoked it.
    The database is migrated here once, before any worker starts; if a worker ends, the others
    are stopped too, and the command ends (the service manager restarts it)."""
    logs.configure(settings.log_level)
    async with open_runtime(settings):
        pass
    host = host or settings.host
    try:
        reserved = reserve_port(host, port or settings.port)  # port 0: the one it picked
    except OSError as exc:
        log.error("the API port cannot be bound", extra={"error": exc.strerror})
        raise SystemExit(1) from None
    port = reserved.getsockname()[1]
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_api_worker, args=(settings, host, port), daemon=True)
        for _ in range(n)
    ]
    for proc in procs:
        proc.start()
    log.info("started API workers", extra={"workers": n})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ended = asyncio.ensure_future(asyncio.to_thread(_first_end, procs))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([ended, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # uvicorn in the worker shuts down gracefully on SIGTERM
        await asyncio.to_thread(_join, procs)
        await ended
        reserved.close()
    if not stop.is_set():
        log.error("an API worker ended: stopping", extra={"workers": n})
        raise SystemExit(1)


def reserve_port(host: str, port: int) -> socket.socket:
    """The port for the workers, bound (not listening) with SO_REUSEPORT so that each worker
    can listen on it with a socket of its own: the kernel then spreads new connections over
    the workers. One shared listening socket did not: the first worker to wake accepted a
    whole burst of connections (32 keep-alive clients: all on one worker in some runs, the
    other idle). Refused, as before, when anything already listens there: SO_REUSEPORT would
    otherwise let a stale instance of the same user share the port unnoticed."""
    family, sockaddr = _address(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(sockaddr)  # OSError (address in use) when the port is taken
        sockaddr = (sockaddr[0], probe.getsockname()[1], *sockaddr[2:])
    return _reuse_port(family, sockaddr)


def listen_shared(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the reserved port."""
    sock = _reuse_port(*_address(host, port))
    sock.listen(2048)
    return sock


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, sockaddr


def _reuse_port(family: socket.AddressFamily, sockaddr: tuple[Any, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
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


def _api_worker(settings: Settings, host: str, port: int) -> None:
    listening = listen_shared(host, port)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(api(settings, host=host, port=port, sockets=[listening]))
