"""Alert-queue listing under load: N historical alerts on SQLite, concurrent clients, loopback.

Usage: python bench/api.py [--alerts 1000000] [--clients 32] [--seconds 20]

Builds a fresh SQLite database in a temporary directory (two organisations; 90 % of the alerts
belong to the one being listed), starts the real desk app under uvicorn on 127.0.0.1 in a
child process, and lets --clients concurrent clients page the queue with an API token: the
first page, a filtered page (state, kind or priority) and the page after it (cursor).
Prints one JSON object on its last line: list_p50_ms, list_p99_ms, requests_per_s, ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert

from core.crypto import Keyring, Vault
from core.escalation import Policy
from core.models import Alert, ApiToken, Base, Defender, Organisation

BATCH = 20_000
KINDS = ["missed_checkin"] * 6 + ["panic"] * 2 + ["duress", "report"]
QUERIES = [
    {},
    {"state": "triggered"},
    {"state": "acknowledged"},
    {"state": "resolved", "kind": "missed_checkin"},
    {"kind": "panic"},
    {"priority": 0},
]


def seed(path: Path, alerts: int) -> tuple[str, str]:
    """Fill the database; returns (database URL, plaintext API token of the listed org)."""
    engine = create_sync_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    orgs = [uuid.uuid4(), uuid.uuid4()]
    token = "amp_bench_" + uuid.uuid4().hex
    from core.auth import digest

    snapshot = Policy().to_json()
    rng = random.Random(7)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(Organisation),
            [{"id": o, "name": f"bench {i}", "created_at": now} for i, o in enumerate(orgs)],
        )
        conn.execute(
            insert(ApiToken),
            [
                {
                    "id": uuid.uuid4(),
                    "org_id": orgs[0],
                    "name": "bench",
                    "token_hash": digest(token),
                    "scopes": ["alerts:read"],
                    "created_at": now,
                }
            ],
        )
        defenders = [(uuid.uuid4(), orgs[0] if i % 10 else orgs[1]) for i in range(2000)]
        conn.execute(
            insert(Defender),
            [
                {"id": d, "org_id": o, "handle": f"h-{d.hex[:12]}", "created_at": now}
                for d, o in defenders
            ],
        )
        done = 0
        while done < alerts:
            rows = []
            for i in range(done, min(done + BATCH, alerts)):
                defender, org = defenders[rng.randrange(len(defenders))]
                kind = KINDS[rng.randrange(len(KINDS))]
                at = now - timedelta(seconds=(alerts - i) * 60 + rng.randrange(60))
                open_ = i >= alerts - 200
                state = rng.choice(["triggered", "acknowledged"]) if open_ else "resolved"
                key = f"{defender.hex}-{kind}-{i}"
                rows.append(
                    {
                        "id": uuid.uuid4(),
                        "org_id": org,
                        "defender_id": defender,
                        "kind": kind,
                        "priority": 0 if kind in ("panic", "duress") else 1,
                        "state": state,
                        "dedup_key": key,
                        "open_key": key if open_ else None,
                        "policy_snapshot": snapshot,
                        "triggered_at": at,
                        "created_at": at,
                        "resolved_at": None if open_ else at + timedelta(minutes=30),
                        "outcome": None if open_ else "safe",
                    }
                )
            conn.execute(insert(Alert), rows)
            done += len(rows)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return f"sqlite+aiosqlite:///{path}", token


def serve(url: str, key_file: str, port: int) -> None:
    """The child process: the real app under uvicorn, as `amparo api` would run it."""
    import uvicorn

    from api.app import create_app
    from core.config import Settings
    from core.crypto import load_keyring
    from core.db import create_engine

    engine = create_engine(url)
    app = create_app(Settings(), engine, Vault(load_keyring(Path(key_file))))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        for _ in range(200):
            try:
                if (await c.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


class Connection:
    """A bare keep-alive HTTP/1.1 client: httpx would spend more CPU than the server measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, target: str, headers: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            name, _sep, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)


async def load(port: int, token: str, clients: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    headers = f"Authorization: Bearer {token}\r\n"

    async def client(n: int) -> None:
        nonlocal errors
        rng = random.Random(n)
        conn = Connection(*await asyncio.open_connection("127.0.0.1", port))
        while time.perf_counter() < deadline:
            params = dict(rng.choice(QUERIES))
            for _page in range(2):  # the first page, then the one after it
                target = "/api/v1/alerts?" + urlencode(params)
                t0 = time.perf_counter()
                status, body = await conn.get(target, headers)
                latencies.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    errors += 1
                    break
                following = json.loads(body)["next_cursor"]
                if following is None:
                    break
                params["cursor"] = following
        conn.writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--serve", nargs=3, metavar=("URL", "KEY_FILE", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        url, token = seed(Path(tmp) / "amparo.db", args.alerts)
        seed_s = time.perf_counter() - t0
        key_file = Path(tmp) / "master.key"
        key_file.write_text(Keyring.generate().to_json())
        os.chmod(key_file, 0o600)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", url, str(key_file), str(port)]
        )
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_up(base))
            asyncio.run(load(port, token, args.clients, args.warmup))
            latencies, errors = asyncio.run(load(port, token, args.clients, args.seconds))
        finally:
            server.terminate()
            server.wait(timeout=10)
    latencies.sort()
    result = {
        "alerts": args.alerts,
        "clients": args.clients,
        "seconds": args.seconds,
        "requests": len(latencies),
        "errors": errors,
        "seed_s": round(seed_s, 1),
        "list_p50_ms": round(statistics.median(latencies), 2),
        "list_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "requests_per_s": round(len(latencies) / args.seconds, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
