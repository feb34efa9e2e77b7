"""The baseline of bench/escalation.py: one APScheduler job per check-in.

Usage: python bench/apscheduler_baseline.py [--timers M]

M check-ins are armed as APScheduler 3 jobs in a SQLAlchemyJobStore (stdlib sqlite3), all due
in the same second, ``misfire_grace_time=None`` (the default of 1 s would silently skip the
late ones), each job taking the engine's deadline step in its own transaction, at most 5 at
once (the database pool's size). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
import uuid
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from escalation import arm, now, percentile
from sqlalchemy import select, update

from core.crypto import Keyring, Vault
from core.db import create_engine, sessionmaker, transaction
from core.models import ChannelAddress, CheckIn, CheckInState

_base: dict[str, Any] = {}


async def baseline_job(checkin_id: str, due: float) -> None:
    """The deadline step of one check-in, as a one-job-per-check-in design would take it."""
    from core import notices
    from core.outbox import Item, enqueue_many

    try:
        async with _base["pool"], transaction(_base["sessions"]) as s:
            row = await s.get(CheckIn, uuid.UUID(checkin_id))
            where = (
                await s.execute(
                    select(ChannelAddress).where(ChannelAddress.defender_id == row.defender_id)
                )
            ).scalar_one()
            msg = notices.reminder("es", discreet=False)
            item = Item("telegram", 2, f"base:{checkin_id}", msg, address_id=where.id)
            await enqueue_many(s, _base["vault"], [item], now=now())
            await s.execute(
                update(CheckIn)
                .where(CheckIn.id == row.id)
                .values(state=CheckInState.reminded, version=CheckIn.version + 1)
            )
    except Exception:
        _base["failed"] += 1
        raise
    finally:
        _base["late"].append(time.time() - due)


async def baseline(url: str, vault: Vault, m: int, directory: Path) -> dict[str, Any]:
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    await arm(url, vault, m, m)
    engine = create_engine(url)
    _base.update(
        sessions=sessionmaker(engine), vault=vault, late=[], failed=0, pool=asyncio.Semaphore(5)
    )
    async with engine.connect() as conn:
        ids = [str(i) for (i,) in await conn.execute(select(CheckIn.id))]
    store = SQLAlchemyJobStore(url=f"sqlite:///{directory / 'jobs.db'}")
    aps = AsyncIOScheduler(jobstores={"default": store}, timezone=UTC)
    aps.start(paused=True)
    started = time.perf_counter()
    due = now() + timedelta(days=1)  # armed ahead, then brought to the same second
    for checkin_id in ids:
        aps.add_job(
            baseline_job,
            "date",
            run_date=due,
            args=[checkin_id, 0.0],
            id=checkin_id,
            misfire_grace_time=None,
            coalesce=True,
        )
    arming = time.perf_counter() - started
    due = now().replace(microsecond=0) + timedelta(seconds=2)
    for job in aps.get_jobs():
        job.modify(args=[job.id, due.timestamp()], next_run_time=due)
    aps.resume()
    while len(_base["late"]) < m:
        await asyncio.sleep(0.05)
    seconds = time.time() - due.timestamp()
    aps.shutdown(wait=False)
    await engine.dispose()
    return {
        "seconds": seconds,
        "arming_s": arming,
        "late": _base["late"],
        "failed": _base["failed"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--timers", type=int, default=5000, help="jobs, all due at once")
    m = parser.parse_args().timers
    result = asyncio.run(
        baseline(
            f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/base.db",
            Vault(Keyring.generate()),
            m,
            Path(tempfile.mkdtemp()),
        )
    )
    late = result.pop("late")
    print(
        json.dumps(
            {
                "timers": m,
                **result,
                "lateness_p50_s": percentile(late, 0.5),
                "lateness_p99_s": percentile(late, 0.99),
            }
        )
    )
