"""Alert-queue listing under load: N historical alerts on SQLite, concurrent clients, loopback.

Usage: python bench/api.py [--alerts 1000000] [--clients 32] [--seconds 20] [--rates 25,50,100]
                           [--db PATH] [--workers N]

Builds a SQLite database (two organisations; 90 % of the alerts belong to the one being
listed; --db keeps it for the next run), starts the real desk app under uvicorn on 127.0.0.1
in a child process, and lets --clients concurrent keep-alive connections page the queue with
an API token: the first page, a filtered page (state, kind or priority) and the page after it
(cursor). The client is a bare HTTP/1.1 client on uvloop in this process: it uses a small
fraction of the CPU the server gets (client_cpu_s says how much).

Runs against the same server, one after the other:
- closed loop (list_*): every connection sends its next request as soon as the last answer
  arrived, so the server is saturated and latency is mostly queueing (p50 ~ clients / rate);
- the same closed loop against a trivial route of the same app (empty_*: same middleware, no
  authentication, no database), the floor any route of this process stands on;
- the list's closed loop again while the queue changes --changes times a second (changing_*:
  an alert of the listed organisation moves a step, committed by another connection). The
  API keeps the queue pages it wrote until the organisation's queue changes (api.queue_route,
  core.queue_versions): list_* on a still queue is mostly kept pages, changing_* shows what
  a busy desk's changes cost them;
- open loop (open_loop, one entry per --rates value): the same --clients connections together
  send that many requests per second on a fixed schedule; latency is counted from the
  scheduled time, so a late server cannot hide its backlog (no coordinated omission).
*_server_cpu_ms is the server's CPU time per request (all threads of all its --workers
processes, from /proc): steadier than latency on a shared machine.
Prints one JSON object on its last line: list_p50_ms, list_p99_ms, requests_per_s, ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert

from core.crypto import Keyring, Vault
from core.escalation import Policy
from core.models import Alert, ApiToken, Base, Defender, Organisation

BATCH = 20_000
KINDS = ["missed_checkin"] * 6 + ["panic"] * 2 + ["duress", "report"]
QUERIES: list[dict[str, str | int]] = [
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


def seeded(path: Path, alerts: int) -> tuple[str, str]:
    """``seed``, or the database a previous run left at ``path`` with as many alerts."""
    marker = path.with_name(path.name + ".token")
    if path.exists() and marker.exists():
        count, _sep, token = marker.read_text().strip().partition(" ")
        if int(count) == alerts:
            engine = create_sync_engine(f"sqlite:///{path}")
            Base.metadata.create_all(engine)  # a table or trigger added since it was seeded
            engine.dispose()
            return f"sqlite+aiosqlite:///{path}", token
    path.unlink(missing_ok=True)
    url, token = seed(path, alerts)
    marker.write_text(f"{alerts} {token}")
    os.chmod(marker, 0o600)
    return url, token


EMPTY = "/bench/empty"
TARGET_P99_MS = 25


def serve(url: str, key_file: str, port: int, workers: int = 1) -> None:
    """The server: the real app under uvicorn (which takes httptools and uvloop when they are
    installed, as the project's dependencies make sure). With ``workers`` > 1, as
    ``amparo api --workers``: that many spawned processes, and this one accepting each
    connection and handing it to the worker holding the fewest (amparo.handoff)."""
    import uvicorn

    if workers <= 1:
        uvicorn.run(
            _bench_app(url, key_file),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            server_header=False,
        )
        return
    import multiprocessing
    import signal

    from amparo import handoff
    from amparo.serve import listen

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the workers on the way out
    listener, ends = listen("127.0.0.1", port), handoff.pairs(workers)
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_worker, args=(url, key_file, end)) for _, end in ends]
    for proc in procs:
        proc.start()
    try:
        asyncio.run(handoff.Spreader(listener, [ours for ours, _ in ends]).run())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join()


def _worker(url: str, key_file: str, end: socket.socket) -> None:
    import uvicorn

    from amparo.handoff import HandedServer

    config = uvicorn.Config(
        _bench_app(url, key_file), log_level="warning", access_log=False, server_header=False
    )
    HandedServer(config, end).run()


def _bench_app(url: str, key_file: str) -> Any:
    from fastapi.responses import JSONResponse

    from api.app import create_app
    from core.config import Settings
    from core.crypto import load_keyring
    from core.db import create_engine

    engine = create_engine(url)
    app = create_app(Settings(), engine, Vault(load_keyring(Path(key_file))))

    @app.get(EMPTY, include_in_schema=False)
    async def empty() -> JSONResponse:  # the baseline: the same stack, no auth, no database
        return JSONResponse({})

    # First in line: the baseline pays no route matching the listing does not pay either.
    app.router.routes.insert(0, app.router.routes.pop())
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(port: int) -> None:
    for _ in range(300):
        try:
            conn = await Connection.open(port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        status, _body = await conn.get("/healthz", "")
        conn.close()
        if status == 200:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


class Connection:
    """A bare keep-alive HTTP/1.1 client: httpx would spend more CPU than the server measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

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

    def close(self) -> None:
        self.writer.close()


class Run:
    """Latencies (ms) and failures of one run; ``due`` paces an open-loop run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.latencies: list[float] = []
        self.errors = 0
        self.server_cpu_ms = 0.0  # the server's CPU time per request during this run
        self.deadline = time.perf_counter() + seconds

    def summary(self, prefix: str) -> dict[str, float]:
        lat = sorted(self.latencies) or [0.0]
        return {
            f"{prefix}_p50_ms": round(statistics.median(lat), 2),
            f"{prefix}_p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)], 2),
            f"{prefix}_max_ms": round(lat[-1], 2),
            f"{prefix}_requests_per_s": round(len(self.latencies) / self.seconds, 1),
            f"{prefix}_errors": self.errors,
            f"{prefix}_server_cpu_ms": round(self.server_cpu_ms, 3),
        }


async def pages(
    conn: Connection,
    rng: random.Random,
    headers: str,
    run: Run,
    start: Callable[[], Awaitable[float]],
) -> None:
    """One visit to the queue: the first page of a query, then the page after it. ``start``
    returns when the next request may go, with the time its latency counts from."""
    params = dict(rng.choice(QUERIES))
    for _page in range(2):
        target = "/api/v1/alerts?" + urlencode(params)
        t0 = await start()
        status, body = await conn.get(target, headers)
        run.latencies.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            run.errors += 1
            return
        following = next_cursor(body)
        if following is None:
            return
        params["cursor"] = following


def next_cursor(body: bytes) -> str | None:
    """The page's ``next_cursor``, read from the end of the body, where the page puts it: the
    whole page (about 20 KB of JSON) parsed here cost the client about 0.1 ms per request,
    taken from the server's cores. Any other body is parsed whole."""
    at = body.rfind(b'"next_cursor":')
    found = json.loads(body[at + 14 : -1] if at >= 0 else body)
    return found if at >= 0 else found["next_cursor"]  # type: ignore[no-any-return]


async def now() -> float:
    return time.perf_counter()


async def closed(port: int, token: str, clients: int, seconds: float, path: str | None) -> Run:
    """Every connection sends again as soon as it has its answer (saturation)."""
    run = Run(seconds)
    headers = f"Authorization: Bearer {token}\r\n"

    async def client(n: int) -> None:
        rng = random.Random(n)
        conn = await Connection.open(port)
        while time.perf_counter() < run.deadline:
            if path is None:
                await pages(conn, rng, headers, run, now)
                continue
            t0 = time.perf_counter()
            status, _body = await conn.get(path, "")
            run.latencies.append((time.perf_counter() - t0) * 1000)
            run.errors += status != 200
        conn.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return run


async def open_loop(port: int, token: str, clients: int, seconds: float, rate: float) -> Run:
    """``rate`` requests per second in all, spread evenly over the connections."""
    run = Run(seconds)
    headers = f"Authorization: Bearer {token}\r\n"
    gap = clients / rate  # each connection's interval between two scheduled requests
    start = time.perf_counter()

    async def client(n: int) -> None:
        rng = random.Random(n)
        conn = await Connection.open(port)
        scheduled = start + gap * n / clients

        async def due() -> float:  # the scheduled time, even when the server is late
            nonlocal scheduled
            at = scheduled
            scheduled += gap
            if at > time.perf_counter():
                await asyncio.sleep(at - time.perf_counter())
            return at

        while scheduled < run.deadline:
            await pages(conn, rng, headers, run, due)
        conn.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return run


def server_cpu_s(pid: int) -> float:
    """CPU seconds the server has used (all threads of the process and of its worker
    processes), from /proc; 0 elsewhere. On a shared machine this is steadier than latency."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Changes:
    """A desk's queue changing under the readers: ``per_s`` times a second, one of the listed
    organisation's recent alerts moves a step (a change every page of it shows), committed by
    a connection of its own in a thread, as the engine's worker would."""

    def __init__(self, db: Path, per_s: float) -> None:
        self.db, self.per_s, self.done = db, per_s, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        org = conn.execute("SELECT org_id FROM api_tokens LIMIT 1").fetchone()[0]
        recent = "SELECT id FROM alerts WHERE org_id = ? ORDER BY triggered_at DESC LIMIT 200"
        ids = [row[0] for row in conn.execute(recent, (org,))]
        rng, at = random.Random(3), time.perf_counter()
        while not self.stop.is_set():
            conn.execute("UPDATE alerts SET step = step + 1 WHERE id = ?", (rng.choice(ids),))
            self.done += 1
            at += 1 / self.per_s
            self.stop.wait(max(0.0, at - time.perf_counter()))
        conn.close()

    async def during(self, run: Callable[[], Awaitable[Run]]) -> Run:
        self.thread.start()
        try:
            return await run()
        finally:
            self.stop.set()
            self.thread.join()


async def measure(
    port: int, pid: int, token: str, args: argparse.Namespace, db: Path
) -> dict[str, Any]:
    await wait_up(port)
    await closed(port, token, args.clients, args.warmup, None)
    cpu = time.process_time()
    runs: dict[str, Run] = {}
    changes = Changes(db, args.changes)
    plan: list[tuple[str, Callable[[], Awaitable[Run]]]] = [
        ("list", partial(closed, port, token, args.clients, args.seconds, None)),
        ("empty", partial(closed, port, token, args.clients, args.seconds / 2, EMPTY)),
        (
            "changing",
            partial(
                changes.during, partial(closed, port, token, args.clients, args.seconds, None)
            ),
        ),
    ]
    plan += [
        (f"open{rate:g}", partial(open_loop, port, token, args.clients, args.seconds / 2, rate))
        for rate in args.rates
    ]
    for name, run in plan:
        before = server_cpu_s(pid)
        runs[name] = await run()
        used = server_cpu_s(pid) - before
        runs[name].server_cpu_ms = 1000 * used / max(len(runs[name].latencies), 1)
    listing, empty = runs["list"].summary("list"), runs["empty"].summary("empty")
    changing = runs["changing"].summary("changing")
    opened = [{"rate_per_s": rate, **runs[f"open{rate:g}"].summary("open")} for rate in args.rates]
    within = [o["rate_per_s"] for o in opened if o["open_p99_ms"] <= TARGET_P99_MS]
    return {
        **listing,
        "requests_per_s": listing["list_requests_per_s"],
        **empty,
        "list_to_empty_rate": round(
            listing["list_requests_per_s"] / max(empty["empty_requests_per_s"], 0.1), 3
        ),
        **changing,
        "changes_per_s": round(changes.done / args.seconds, 1),
        "open_loop": opened,
        "open_max_rate_within_target_per_s": max(within, default=0),
        "client_cpu_s": round(time.process_time() - cpu, 1),
    }


def run_client(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """The load on uvloop, as the server runs: asyncio's own loop cost the client about a
    third more CPU per request, and on a machine of two cores the client's CPU is the
    server's too."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[25.0, 50.0, 100.0, 200.0],
        help="open-loop request rates (requests/s in all), comma-separated",
    )
    parser.add_argument("--db", type=Path, help="keep the seeded database here and reuse it")
    parser.add_argument(
        "--changes",
        type=float,
        default=20.0,
        help="alert changes a second during the changing_* run (each unkeeps the org's pages)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=_cores(),
        help="server processes (amparo api --workers); default: one per usable core, as a"
        " deployment on this machine would run it",
    )
    parser.add_argument(
        "--serve", nargs=3, metavar=("URL", "KEY_FILE", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]), args.workers)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "amparo.db"
        t0 = time.perf_counter()
        url, token = seeded(db, args.alerts)
        seed_s = time.perf_counter() - t0
        key_file = Path(tmp) / "master.key"
        key_file.write_text(Keyring.generate().to_json())
        os.chmod(key_file, 0o600)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", url, str(key_file), str(port)]
            + ["--workers", str(args.workers)]
        )
        try:
            measured = run_client(measure(port, server.pid, token, args, db))
        finally:
            server.terminate()
            server.wait(timeout=10)
    result = {
        "alerts": args.alerts,
        "clients": args.clients,
        "workers": args.workers,
        "seconds": args.seconds,
        "seed_s": round(seed_s, 1),
        "target_p99_ms": TARGET_P99_MS,
        **measured,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
