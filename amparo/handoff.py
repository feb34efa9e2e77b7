"""``amparo api --workers N``: one listening socket, and each connection handed to the worker
holding the fewest.

The supervisor accepts every connection and passes it (SCM_RIGHTS, over one Unix socket pair
per worker) to the worker with the fewest open connections; the worker serves it with
uvicorn's own protocol, as if it had accepted it, and reports back when it closes. Neither
way the kernel offers spreads long-lived connections evenly: one socket shared by the
workers let the first to wake accept a whole burst (32 keep-alive clients, all on one worker
in some runs), and SO_REUSEPORT spreads them by a hash of their addresses, so two workers
hold, say, 19 and 13 of 32 for as long as those connections live, and the busier one's
clients wait about half as long again (tests/api/test_workers.py saw 20 and 12). The hand-off
costs a message per new connection, nothing per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn

log = logging.getLogger("amparo")

_CONNECTION, _CLOSED = b"c", b"x"  # supervisor -> worker (with the socket), worker -> supervisor


def pairs(n: int) -> list[tuple[socket.socket, socket.socket]]:
    """One (supervisor's end, worker's end) per worker: message boundaries kept, so each
    handed connection arrives alone."""
    return [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(n)]


class Spreader:
    """The supervisor's side: accept, and hand each connection to the least busy worker."""

    def __init__(self, listener: socket.socket, ends: list[socket.socket]) -> None:
        self.listener, self.ends = listener, ends
        self.held = [0] * len(ends)  # open connections per worker, as they reported
        self.handed = [0] * len(ends)  # connections handed to each, ever (tests, the bench)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.listener.setblocking(False)
        for i, end in enumerate(self.ends):
            end.setblocking(False)
            loop.add_reader(end.fileno(), self._closed, i)
        try:
            while True:
                try:
                    conn, _peer = await loop.sock_accept(self.listener)
                except (ConnectionError, InterruptedError):
                    continue  # that client left before it was accepted
                except OSError as exc:  # out of descriptors, say: wait, and accept again
                    log.warning("accepting a connection failed", extra={"error": exc.strerror})
                    await asyncio.sleep(0.1)
                    continue
                with conn:
                    self._hand(conn)
        finally:
            for end in self.ends:
                loop.remove_reader(end.fileno())

    def _hand(self, conn: socket.socket) -> None:
        order = sorted(range(len(self.ends)), key=self.held.__getitem__)
        for i in order:  # a worker whose queue is full (stuck) is passed over
            try:
                socket.send_fds(self.ends[i], [_CONNECTION], [conn.fileno()])
            except (BlockingIOError, ConnectionError):
                continue
            self.held[i] += 1
            self.handed[i] += 1
            return
        log.warning("no API worker could take a connection")  # closed: the client retries

    def _closed(self, i: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while reports := self.ends[i].recv(64):
                self.held[i] = max(0, self.held[i] - reports.count(_CLOSED))
            # The worker is gone (its end reads as closed): stop watching it, or this would
            # be called again at once, forever. The supervisor stops the others (amparo.serve).
            asyncio.get_running_loop().remove_reader(self.ends[i].fileno())


class HandedServer(uvicorn.Server):
    """uvicorn serving the connections its supervisor hands over, with no socket of its own.
    A worker whose supervisor is gone stops as uvicorn does on SIGTERM."""

    def __init__(self, config: uvicorn.Config, end: socket.socket) -> None:
        super().__init__(config)
        self.end = end
        self._adopting: set[asyncio.Task[Any]] = set()
        self._protocol: Any = None  # set at startup, once uvicorn chose its protocol class

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # no listener: connections come through ``end``
        if not self.started:
            return
        base, end = self.config.http_protocol_class, self.end

        class Reported(base):  # type: ignore[valid-type,misc]
            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                with contextlib.suppress(OSError):
                    end.send(_CLOSED)

        def protocol() -> asyncio.Protocol:
            return Reported(
                config=self.config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
            )

        self._protocol = protocol
        self.end.setblocking(False)
        asyncio.get_running_loop().add_reader(self.end.fileno(), self._receive)

    def _receive(self) -> None:
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(self.end, 16, 1)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the supervisor is gone
                asyncio.get_running_loop().remove_reader(self.end.fileno())
                self.should_exit = True
                return
            for fd in fds:
                task = asyncio.ensure_future(self._adopt(socket.socket(fileno=fd)))
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)

    async def _adopt(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(self._protocol, conn, ssl=self.config.ssl)
        except OSError:  # the client left before it was served
            conn.close()
            with contextlib.suppress(OSError):
                self.end.send(_CLOSED)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.end.fileno())  # nothing new
        await super().shutdown(sockets)
