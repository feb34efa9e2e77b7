"""Escalation under a spike: the engine's sweep against one APScheduler job per check-in.

Usage: python bench/escalation.py --timers N [--spike F] [--backend sqlite|postgresql]
                                  [--workers K] [--baseline-timers M]

Arms N check-ins (one defender and address each); a fraction F of them fall due in the same
second, the rest over the following week. K engine workers (processes running the real
Scheduler + Sweep under uvloop, as ``amparo worker`` does) take the deadline step of every
due check-in: the reminder written to the outbox and the next timer, committed together. The
dispatcher does not run (delivery is capped by the channels anyway: Telegram takes 30
messages/s per bot).
``seconds`` runs from the spike's due second until the last step commits. A step's lateness is
the moment its transaction (the transition with its outbox rows) has committed minus its due
time, so the last batch of a spike is as late as the whole spike takes: with F·N due in the
same second, lateness p99 is about 0.99·F·N / escalations_per_s, whatever the batching.
``lateness_min_s`` is the first batch's: how soon a spike starts being committed.

The baseline arms M of those check-ins as APScheduler jobs in a SQLAlchemyJobStore (stdlib
sqlite3), ``misfire_grace_time=None``, each job taking the same step in its own transaction
(at most 5 at once, the database pool's size). When M is smaller than the spike,
``baseline_seconds`` is extrapolated linearly to the spike and ``baseline_extrapolated`` is
true. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select, update

from core.crypto import Keyring, Vault, load_keyring, write_keyring
from core.db import create_engine, sessionmaker, transaction
from core.models import (
    Base,
    ChannelAddress,
    CheckIn,
    CheckInState,
    Defender,
    Organisation,
)
from core.models import CheckInKind as Kind
from core.models import DefenderStatus as Status

BATCH = 5000
PARKED = datetime(2100, 1, 1, tzinfo=UTC)  # where the spike waits while everything is armed


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def now() -> datetime:
    return datetime.now(UTC)


PEOPLE = ("id", "org_id", "handle", "locale", "timezone", "status", "discreet", "failed_pins")
PLACES = ("id", "channel", "defender_id", "preference", "value_enc", "dek", "blind_index")
TIMERS = ("id", "defender_id", "kind", "due_at", "next_action_at", "grace_s", "state", "version")


def rows(columns: tuple[str, ...], values: list[tuple[Any, ...]], at: datetime) -> list[Any]:
    return [{**dict(zip(columns, v, strict=True)), "created_at": at} for v in values]


async def arm(url: str, vault: Vault, n: int, spike: int) -> None:
    """N defenders with an address and a timer each: ``spike`` parked, the rest in a week."""
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    sessions, org, start = sessionmaker(engine), uuid.uuid4(), now()
    async with transaction(sessions) as s:
        s.add(Organisation(id=org, name="bench"))
    gap = 7 * 86400 / max(1, n - spike)
    for first in range(0, n, BATCH):
        people, places, timers = [], [], []
        for i in range(first, min(n, first + BATCH)):
            did, aid, value = uuid.uuid4(), uuid.uuid4(), str(10_000_000 + i)
            people.append((did, org, f"b{i}", "es", "UTC", Status.active, False, 0))
            where = ChannelAddress(id=aid, channel="telegram", defender_id=did)
            where.put(vault, "value_enc", value)
            index = vault.address_index("telegram", value)
            places.append((aid, "telegram", did, 0, where.value_enc, where.dek, index))
            due = PARKED if i < spike else start + timedelta(days=1, seconds=(i - spike) * gap)
            timers.append((uuid.uuid4(), did, Kind.timer, due, due, 900, CheckInState.armed, 1))
        async with transaction(sessions) as s:
            await s.execute(insert(Defender.__table__), rows(PEOPLE, people, start))
            await s.execute(insert(ChannelAddress.__table__), rows(PLACES, places, start))
            await s.execute(insert(CheckIn.__table__), rows(TIMERS, timers, start))
    await engine.dispose()


# --- an engine worker (a child process) ------------------------------------------------------


async def worker(url: str, key_file: str, out: str) -> None:
    from amparo.worker import settle
    from core.scheduler import Scheduler
    from core.sweep import Sweep

    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "skipped: still running"
    engine = create_engine(url)
    late, idle = array("d"), array("d")
    vault = Vault(load_keyring(Path(key_file)))
    sweeper = Sweep(
        sessionmaker(engine),
        vault,
        owner=f"bench-{os.getpid()}",
        observe=late.append,
        clock=now,
    )
    run = sweeper.run

    async def timed(at: datetime) -> int:  # idle sweeps: their cost must not grow with N
        started = time.perf_counter()
        done = await run(at)
        if done == 0:
            idle.append((time.perf_counter() - started) * 1000)
        return done

    sweeper.run = timed  # type: ignore[method-assign]
    scheduler, stop = Scheduler(sweeper, interval_s=1.0), asyncio.Event()
    settle()  # as amparo worker does before its first sweep
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    scheduler.start()
    await stop.wait()
    await scheduler.stop()
    result = {"late": list(late), "idle_ms": list(idle), "rss_mb": rss_mb()}
    Path(out).write_text(json.dumps(result))
    await engine.dispose()


async def engine_run(url: str, key_file: Path, workers: int, spike: int) -> dict[str, Any]:
    outs = [key_file.parent / f"w{n}.json" for n in range(workers)]
    procs = [
        subprocess.Popen([sys.executable, __file__, "--worker", url, str(key_file), str(o)])
        for o in outs
    ]
    engine = create_engine(url)
    try:
        await asyncio.sleep(6)  # the workers start and sweep idle over N armed timers
        spike_at = now().replace(microsecond=0) + timedelta(seconds=3)
        async with engine.begin() as conn:
            await conn.execute(
                update(CheckIn)
                .where(CheckIn.due_at == PARKED)
                .values(due_at=spike_at, next_action_at=spike_at)
            )
        stmt = select(func.count()).where(CheckIn.state == CheckInState.reminded)
        while True:
            async with engine.connect() as conn:
                if (await conn.scalar(stmt) or 0) >= spike:
                    break
            await asyncio.sleep(0.1)
        seconds = (now() - spike_at).total_seconds()
    finally:
        await engine.dispose()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    results = [json.loads(o.read_text()) for o in outs]
    return {
        "seconds": seconds,
        "late": [x for r in results for x in r["late"]],
        "idle_ms": [x for r in results for x in r["idle_ms"]],
        "rss_mb": max(r["rss_mb"] for r in results),
    }


# --- the run ---------------------------------------------------------------------------------


async def database(backend: str, directory: Path) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{directory / 'engine.db'}", None
    import asyncpg

    from tests.pg import start_cluster

    cluster = start_cluster()
    conn = await asyncpg.connect(f"postgresql://amparo@127.0.0.1:{cluster.port}/postgres")
    await conn.execute('CREATE DATABASE "engine"')
    await conn.close()
    return f"{cluster.url}/engine", cluster


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else 0.0


async def main(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="amparo-bench-"))
    try:  # the databases of a million timers take a few hundred MB: not left behind
        return await measure(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def measure(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    key_file = directory / "master.key"
    write_keyring(key_file, Keyring.generate())
    vault = Vault(load_keyring(key_file))
    spike = int(args.timers * args.spike)
    url, cluster = await database(args.backend, directory)
    try:
        started = time.perf_counter()
        await arm(url, vault, args.timers, spike)
        arming = time.perf_counter() - started
        ours = await engine_run(url, key_file, args.workers, spike)
    finally:
        if cluster is not None:
            cluster.stop()
    from apscheduler_baseline import baseline

    m = args.baseline_timers or min(spike, 20_000)
    base = await baseline(f"sqlite+aiosqlite:///{directory / 'base.db'}", vault, m, directory)
    base_seconds = base["seconds"] * spike / m
    return {
        "timers": args.timers,
        "spike": args.spike,
        "backend": args.backend,
        "workers": args.workers,
        "spike_timers": spike,
        "arming_s": round(arming, 1),
        "escalations_per_s": round(spike / ours["seconds"]),
        "lateness_min_s": round(min(ours["late"], default=0.0), 3),
        "lateness_p50_s": percentile(ours["late"], 0.5),
        "lateness_p99_s": percentile(ours["late"], 0.99),
        "lateness_max_s": round(max(ours["late"], default=0.0), 3),
        "idle_sweep_ms_median": round(statistics.median(ours["idle_ms"] or [0.0]), 2),
        "peak_rss_mb": round(ours["rss_mb"], 1),
        "peak_rss_mb_loader": round(rss_mb(), 1),
        "seconds": round(ours["seconds"], 2),
        "baseline_timers": m,
        "baseline_extrapolated": m != spike,
        "baseline_seconds": round(base_seconds, 2),
        "baseline_measured_seconds": round(base["seconds"], 2),
        "baseline_lateness_p99_s": percentile(base["late"], 0.99),
        "baseline_failed": base["failed"],
        "baseline_arming_s": round(base["arming_s"], 1),
        "speedup_vs_apscheduler": round(base_seconds / ours["seconds"], 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--timers", type=int, default=100_000, help="check-ins armed")
    parser.add_argument("--spike", type=float, default=0.2, help="fraction due in one second")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--workers", type=int, default=1, help="engine worker processes")
    parser.add_argument(
        "--baseline-timers",
        type=int,
        default=None,
        help="check-ins for the APScheduler baseline (default: min(spike, 20000))",
    )
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.worker:
        import uvloop

        # As ``amparo worker`` runs (amparo.command.run): the same event loop.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(worker(*cli.worker))
    else:
        print(json.dumps(asyncio.run(main(cli))))
