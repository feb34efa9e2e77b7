"""``amparo api`` with several worker processes on one port (amparo.serve.api(workers=N))."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

RUN = """
import asyncio, sys
from amparo.serve import api
from core.config import Settings
asyncio.run(api(Settings(), port=int(sys.argv[1]), workers=2))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid) and "spawn_main" in (stat.parent / "cmdline").read_text():
            found.add(int(stat.parent.name))
    return found


def start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
    env.update({"AMPARO_DATA_DIR": str(tmp_path / "var"), "PYTHONPATH": os.getcwd()})
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return proc, port


def healthy(proc: subprocess.Popen[bytes], port: int, times: int) -> list[str]:
    # Two processes start, import and open the database: on a loaded 2-core machine (CI with
    # other work beside it) that took over 30 s.
    deadline, codes = time.monotonic() + 90, []
    while len(codes) < times and time.monotonic() < deadline and proc.poll() is None:
        try:  # a new connection each time: either worker may accept it
            codes.append(httpx.get(f"http://127.0.0.1:{port}/healthz").json()["database"])
        except httpx.TransportError:
            time.sleep(0.1)
    return codes


def listening_sockets(port: int) -> int:
    """How many sockets listen on ``port`` (/proc/net/tcp: state 0A is LISTEN)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        1 for line in lines if (f := line.split())[1].endswith(f":{port:04X}") and f[3] == "0A"
    )


def served_by(port: int, workers: set[int]) -> dict[int, set[int]]:
    """Which worker holds the server's side of each connection to ``port``: {pid: the client
    ports} (/proc/net/tcp: state 01 is ESTABLISHED, the last column's inode is in the fds)."""
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1].endswith(f":{port:04X}") and f[3] == "01":
            inodes[f"socket:[{f[9]}]"] = int(f[2].rsplit(":", 1)[1], 16)
    held: dict[int, set[int]] = {pid: set() for pid in workers}
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if (target := os.readlink(fd)) in inodes:
                    held[pid].add(inodes[target])
    return held


def settled(port: int, workers: set[int]) -> None:
    """Wait until ``workers`` hold no connection to ``port``, then a little longer: each
    worker reports a close to the supervisor after closing, and a report still on its way
    would leave that worker counted busier (a 15/17 split under load)."""
    deadline = time.monotonic() + 10
    while any(served_by(port, workers).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)


def keep_alive(port: int, n: int) -> list[socket.socket]:
    """``n`` connections, each answered once (so its worker has surely taken it)."""
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    for conn in conns:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for conn in conns:
        conn.settimeout(10)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    return conns


def test_two_workers_serve_one_port_and_stop_together(tmp_path: Path) -> None:
    proc, port = start(tmp_path)
    workers: set[int] = set()
    try:
        assert healthy(proc, port, 20) == ["ok"] * 20
        workers = children(proc.pid)
        assert len(workers) == 2
        assert listening_sockets(port) == 1  # the supervisor's: it hands each connection on
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=40)[0].decode()
    assert proc.returncode == 0, output
    assert output.count("serving the desk API") == 2 and "started API workers" in output
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # none left behind


def test_connections_are_spread_evenly_and_closed_ones_are_counted_back(tmp_path: Path) -> None:
    """32 keep-alive clients at once are served 16 by each worker (SO_REUSEPORT's hash gave
    splits such as 19 and 13; one shared socket, all 32 to one worker). When the clients of
    one worker leave, the next ones all go to it: the workers report closes."""
    proc, port = start(tmp_path)
    conns: list[socket.socket] = []
    try:
        assert healthy(proc, port, 1) == ["ok"]
        workers = children(proc.pid)
        settled(port, workers)  # the health check's connection is counted back first
        conns = keep_alive(port, 32)
        held = served_by(port, workers)
        assert sorted(len(ports) for ports in held.values()) == [16, 16]
        first, second = sorted(workers)
        leaving = [c for c in conns if c.getsockname()[1] in held[first]]
        for conn in leaving:
            conn.close()
        conns = [c for c in conns if c not in leaving]
        settled(port, {first})  # the closes reach the supervisor
        more = keep_alive(port, 10)
        conns += more
        again = served_by(port, workers)
        assert {c.getsockname()[1] for c in more} <= again[first]
        assert len(again[second]) == 16
    finally:
        for conn in conns:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=40)[0].decode()
    assert proc.returncode == 0, output


def test_a_worker_that_dies_stops_the_command(tmp_path: Path) -> None:
    proc, port = start(tmp_path)
    try:
        assert healthy(proc, port, 2) == ["ok"] * 2
        workers = children(proc.pid)
        os.kill(min(workers), signal.SIGKILL)
        output = proc.communicate(timeout=40)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, output  # the service manager sees it and restarts the lot
    assert "an API worker ended" in output
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_port_already_listened_on_is_refused(tmp_path: Path) -> None:
    """SO_REUSEPORT must not let a second instance share a port unnoticed."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
        env.update({"AMPARO_DATA_DIR": str(tmp_path / "var"), "PYTHONPATH": os.getcwd()})
        done = subprocess.run(
            [sys.executable, "-c", RUN, str(taken.getsockname()[1])],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, output
    assert "the API port cannot be bound" in output and "started API workers" not in output
