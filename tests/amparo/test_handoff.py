"""amparo.handoff's supervisor side, in one process: who gets each connection, and an accept
that fails (out of descriptors) does not stop the spreading."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest

from amparo import handoff
from amparo.serve import listen


async def received(end: socket.socket) -> list[socket.socket]:
    """The connections handed to a worker so far (what HandedServer would adopt)."""
    got = []
    end.setblocking(False)
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(end, 16, 1)
        except BlockingIOError:
            return got
        assert message == b"c"
        got += [socket.socket(fileno=fd) for fd in fds]


def close(listener: socket.socket, pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    listener.close()
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


async def connect(port: int, n: int) -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(n):
        conn = socket.socket()
        conn.setblocking(False)
        await loop.sock_connect(conn, ("127.0.0.1", port))
        conns.append(conn)
    await asyncio.sleep(0.2)  # accepted and handed
    return conns


async def test_each_connection_goes_to_the_worker_holding_the_fewest() -> None:
    listener, pairs = listen("127.0.0.1", 0), handoff.pairs(2)
    spreader = handoff.Spreader(listener, [ours for ours, _ in pairs])
    task = asyncio.create_task(spreader.run())
    try:
        port = listener.getsockname()[1]
        clients = await connect(port, 6)
        first = [await received(theirs) for _, theirs in pairs]
        assert [len(g) for g in first] == [3, 3]
        for _ in first[0]:  # worker 0's three clients leave: it reports each close
            pairs[0][1].send(b"x")
        await asyncio.sleep(0.1)
        assert spreader.held == [0, 3]
        clients += await connect(port, 3)
        again = [await received(theirs) for _, theirs in pairs]
        assert [len(g) for g in again] == [3, 0]
        first += again
        for conn in clients + [c for g in first for c in g]:
            conn.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        close(listener, pairs)


async def test_a_failed_accept_is_waited_out(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    real = loop.sock_accept
    failures = [OSError(errno.EMFILE, "Too many open files"), ConnectionAbortedError()]

    async def flaky(sock: socket.socket) -> Any:
        if failures:
            raise failures.pop(0)
        return await real(sock)

    monkeypatch.setattr(loop, "sock_accept", flaky)
    listener, pairs = listen("127.0.0.1", 0), handoff.pairs(1)
    task = asyncio.create_task(handoff.Spreader(listener, [pairs[0][0]]).run())
    try:
        clients = await connect(listener.getsockname()[1], 2)
        assert not task.done()
        handed = await received(pairs[0][1])
        assert len(handed) == 2
        for conn in clients + handed:
            conn.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        close(listener, pairs)


async def test_a_worker_gone_is_no_longer_watched() -> None:
    """Its end reads as closed from then on: the supervisor must not spin on it."""
    listener, pairs = listen("127.0.0.1", 0), handoff.pairs(2)
    spreader = handoff.Spreader(listener, [ours for ours, _ in pairs])
    calls = 0
    real = spreader._closed

    def counted(i: int) -> None:
        nonlocal calls
        calls += 1
        real(i)

    spreader._closed = counted  # type: ignore[method-assign]
    task = asyncio.create_task(spreader.run())
    try:
        await asyncio.sleep(0.05)
        pairs[0][1].close()
        await asyncio.sleep(0.2)
        assert calls == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        close(listener, pairs)
