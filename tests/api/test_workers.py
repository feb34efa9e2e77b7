"""``amparo api`` with several worker processes on one port (amparo.serve.api(workers=N))."""

from __future__ import annotations

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
    deadline, codes = time.monotonic() + 30, []
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


def test_two_workers_serve_one_port_and_stop_together(tmp_path: Path) -> None:
    proc, port = start(tmp_path)
    workers: set[int] = set()
    try:
        assert healthy(proc, port, 20) == ["ok"] * 20
        workers = children(proc.pid)
        assert len(workers) == 2
        # Each worker listens with its own socket (SO_REUSEPORT): the kernel spreads new
        # connections over them, where one shared socket let one worker take a whole burst.
        assert listening_sockets(port) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=40)[0].decode()
    assert proc.returncode == 0, output
    assert output.count("serving the desk API") == 2 and "started API workers" in output
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # none left behind


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
