"""Panics while the desk sends a broadcast: what a large fan-out costs everyone else, on SQLite.

Usage: python bench/broadcast.py [--defenders 10000] [--broadcasts 3] [--panics-every 0.02]

A desk's broadcast (``core.broadcasts.send``, as ``POST /api/v1/broadcasts`` runs it) queues
one encrypted outbox row per enrolled defender in one transaction. Meanwhile the same process
keeps taking panics (``/panic`` through the real flow engine, each its own transaction: the
alert, its events and outbox rows). This measures, on a fresh SQLite file:

- ``broadcast_s``: how long each broadcast's request takes (the median of ``--broadcasts``);
- ``loop_stall_max_ms``: the longest the event loop went without running anything else
  while broadcasts were sent (a 5 ms ticker's lateness): everything in that process, the
  bot's updates and the API's requests included, waits that long;
- panic latency (``Engine.handle`` until committed), alone and while broadcasts are sent
  (one panic every ``--panics-every`` seconds, each from a different defender).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import broadcasts
from core.crypto import Keyring, Vault, generate_org_keypair
from core.db import create_engine, sessionmaker, transaction
from core.defenders import new_address
from core.messages import Inbound
from core.models import Base, Defender, DefenderStatus, Organisation, utcnow
from flows.engine import Engine

LOCALES = ("en", "es", "fr", "pt", "ar")
TEXT = "The weekly call moves to Thursday. Check in when you can."


async def seed(sessions: object, vault: Vault, n: int) -> uuid.UUID:
    """N active defenders reached on Telegram, in five languages; the organisation's id."""
    async with transaction(sessions) as s:  # type: ignore[arg-type]
        org = Organisation(id=uuid.uuid4(), name="Bench", public_key=generate_org_keypair()[0])
        s.add(org)
        await s.flush()
        for first in range(0, n, 2000):
            people = [
                Defender(
                    id=uuid.uuid4(),
                    org_id=org.id,
                    handle=f"bench-{i}",
                    locale=LOCALES[i % len(LOCALES)],
                    status=DefenderStatus.active,
                )
                for i in range(first, min(n, first + 2000))
            ]
            s.add_all(people)
            await s.flush()
            for i, defender in enumerate(people, start=first):
                address = new_address(vault, "telegram", str(700_000_000 + i))
                address.defender_id = defender.id
                s.add(address)
            await s.flush()
    return org.id


class Panics:
    """One ``/panic`` at a time from defenders not yet in alert, timed to the commit."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.next = engine, 0

    async def one(self) -> float:
        i, self.next = self.next, self.next + 1
        inbound = Inbound(
            channel="telegram",
            address=str(700_000_000 + i),
            message_id=f"panic-{i}",
            received_at=utcnow(),
            text="/panic",
        )
        started = time.perf_counter()
        await self.engine.handle(inbound)
        return (time.perf_counter() - started) * 1000


async def ticker(stalls: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        stalls.append((time.perf_counter() - started - 0.005) * 1000)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


async def main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        db = create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        async with db.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = sessionmaker(db)
        vault = Vault(Keyring.generate())
        org_id = await seed(sessions, vault, args.defenders)
        panics = Panics(Engine(sessions, vault))
        alone = [await panics.one() for _ in range(args.quiet_panics)]

        took: list[float] = []
        during: list[float] = []
        stalls: list[float] = []
        for _ in range(args.broadcasts):
            done = asyncio.Event()
            tick = asyncio.create_task(ticker(stalls, done))
            await asyncio.sleep(0.05)

            async def send(done: asyncio.Event = done) -> None:
                started = time.perf_counter()
                try:
                    async with transaction(sessions) as s:
                        await broadcasts.send(
                            s, vault, org_id=org_id, text=TEXT, actor="bench", now=utcnow()
                        )
                finally:
                    done.set()
                took.append(time.perf_counter() - started)

            sending = asyncio.create_task(send())
            while not sending.done():  # a broadcast that failed ends the loop too
                during.append(await panics.one())
                await asyncio.sleep(args.panics_every)
            await tick
            await sending
        await db.dispose()
    return {
        "benchmark": "broadcast",
        "backend": "sqlite",
        "defenders": args.defenders,
        "broadcasts": args.broadcasts,
        "broadcast_s": round(statistics.median(took), 3),
        "loop_stall_max_ms": round(max(stalls), 1),
        "panic_ms_p50_alone": pct(alone, 0.5),
        "panic_ms_max_alone": pct(alone, 1.0),
        "panics_during": len(during),
        "panic_ms_p50_during": pct(during, 0.5),
        "panic_ms_max_during": pct(during, 1.0),
    }


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--defenders", type=int, default=10_000)
    parser.add_argument("--broadcasts", type=int, default=3)
    parser.add_argument("--quiet-panics", type=int, default=20)
    parser.add_argument("--panics-every", type=float, default=0.02, help="seconds")
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse()))))
