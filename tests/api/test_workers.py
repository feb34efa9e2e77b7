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


def test_two_workers_serve_one_port_and_stop_together(tmp_path: Path) -> None:
    proc, port = start(tmp_path)
    workers: set[int] = set()
    try:
        assert healthy(proc, port, 20) == ["ok"] * 20
        workers = children(proc.pid)
        assert len(workers) == 2
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
