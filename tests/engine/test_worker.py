"""`amparo worker` runs the engine until told to stop, and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def run_worker(tmp_path: Path, **settings: str) -> str:
    """`amparo worker` until the engine runs (and a few sweeps), then SIGTERM: its log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
    env.update({"AMPARO_DATA_DIR": str(tmp_path / "var"), "AMPARO_LOG_LEVEL": "INFO"})
    env.update(settings)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "amparo", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if "engine running" in log.read_text():  # after the migrations, however long
                time.sleep(1.5)  # a few sweeps
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the worker exited by itself"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        output = log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    return output


def test_it_runs_the_engine_and_stops_on_sigterm(tmp_path: Path) -> None:
    output = run_worker(tmp_path)
    assert "engine running" in output and "worker stopped" in output
    assert "AMPARO_HEARTBEAT_URL" not in output  # development: not asked for


def test_in_production_it_warns_when_nothing_watches_it(tmp_path: Path) -> None:
    """R27: without a heartbeat URL, nothing outside would notice the engine stopping."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
    made = subprocess.run(
        [sys.executable, "-m", "amparo", "keys", "init"],
        env={**env, "AMPARO_DATA_DIR": str(tmp_path / "var")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    output = run_worker(tmp_path, AMPARO_MODE="production")
    assert "no AMPARO_HEARTBEAT_URL" in output and "engine running" in output
