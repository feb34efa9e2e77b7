"""`amparo serve` on a fresh data directory answers /healthz with its own SQLite database."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import inspect

from amparo.serve import _config
from api.deps import client_address
from core.config import Settings
from core.db import create_engine

# The stand-ins take any burst: a reply need not wait a second after the one before it, as
# the dispatcher spaces messages to one chat for Telegram (AMPARO_CHAT_RATE).
FAST_CHATS = {"AMPARO_CHAT_RATE": "50"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Lines left empty in .env: as if absent (an empty token started Telegram, and crashed).
EMPTY = dict.fromkeys(
    (
        "AMPARO_TELEGRAM_TOKEN",
        "AMPARO_TELEGRAM_API_URL",
        "AMPARO_TELEGRAM_WEBHOOK_URL",
        "AMPARO_TELEGRAM_WEBHOOK_SECRET",
        "AMPARO_SIGNAL_SERVICE",
        "AMPARO_SIGNAL_NUMBER",
        "AMPARO_HEARTBEAT_URL",
        "AMPARO_METRICS_TOKEN",
        "AMPARO_MASTER_KEY_FILE",
        "AMPARO_DATABASE_URL",
        "AMPARO_LOG_LEVEL",
        "AMPARO_HOST",
    ),
    "",
)


@pytest.mark.parametrize("unset", [{}, EMPTY], ids=["absent", "empty"])
async def test_it_serves_healthz_on_a_fresh_data_dir(
    tmp_path: Path, unset: dict[str, str]
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
    env.update({"AMPARO_DATA_DIR": str(tmp_path / "var"), "AMPARO_PORT": str(port), **unset})
    proc = subprocess.Popen(
        [sys.executable, "-m", "amparo", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, answer = time.monotonic() + 30, None
        async with httpx.AsyncClient() as client:
            while answer is None and time.monotonic() < deadline and proc.poll() is None:
                try:
                    answer = await client.get(f"http://127.0.0.1:{port}/healthz")
                except httpx.TransportError:
                    time.sleep(0.1)
        assert answer is not None, "no answer from amparo serve"
        assert answer.status_code == 200
        expected = {"status": "ok", "database": "ok", "escalation": "ok"}
        assert expected.items() <= answer.json().items()
        assert answer.headers["cache-control"] == "no-store"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -15), output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
    key_file = tmp_path / "var" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'amparo.db'}")
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()
    assert {"alembic_version", "alerts", "outbox", "checkins"} <= set(tables)


async def test_amparo_api_serves_the_desk_without_the_engine(tmp_path: Path) -> None:
    """`amparo api` (DESIGN.md's CLI): the API, no sweep and no dispatcher in this process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
    env.update({"AMPARO_DATA_DIR": str(tmp_path / "var"), "AMPARO_PORT": str(port)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "amparo", "api"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, schema = time.monotonic() + 30, None
        async with httpx.AsyncClient() as client:
            while schema is None and time.monotonic() < deadline and proc.poll() is None:
                try:
                    schema = await client.get(f"http://127.0.0.1:{port}/api/v1/openapi.json")
                except httpx.TransportError:
                    time.sleep(0.1)
            assert schema is not None, "no answer from amparo api"
            assert schema.status_code == 200 and "/api/v1/alerts" in schema.json()["paths"]
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
            assert health.json()["database"] == "ok"
            hook = await client.post(f"http://127.0.0.1:{port}/hooks/telegram", json={})
            assert hook.status_code == 404  # no webhook mode configured: no route
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode in (0, -15), output
    assert "serving the desk API" in output
    assert "engine running" not in output  # the workers sweep and deliver


async def test_only_the_trusted_proxy_says_who_the_client_is() -> None:
    """Behind the TLS proxy every connection comes from the proxy: its X-Forwarded-For is
    believed (each client keeps its own login budget), anyone else's is not."""
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> str:
        return client_address(request)

    config = _config(app, Settings(trusted_proxies="172.31.250.1"), None, None)
    config.load()
    seen = []
    for peer in ("172.31.250.1", "172.31.250.9"):
        transport = httpx.ASGITransport(app=config.loaded_app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://desk") as c:
            answer = await c.get("/who", headers={"X-Forwarded-For": "203.0.113.7"})
            seen.append(answer.json())
    assert seen == ["203.0.113.7", "172.31.250.9"]
