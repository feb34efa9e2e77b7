"""Check-ins through the flow engine and the database: N defenders at once, on SQLite.

Usage: python bench/flows.py [--defenders 1000] [--pin-sample 40] [--argon2 production|light]

Each simulated defender, concurrently with all the others, opens the check-in menu, starts a
one-hour timer, asks for its status, then says "I'm safe" and sends the PIN: five events, each
a real ``Engine.handle`` (dedupe, conversation load, state function, check-in service, outbox
reply, commit) on a fresh SQLite file in a temporary directory.

A PIN costs two Argon2id verifications (both PINs are always checked, so a duress PIN takes
as long as a cancel PIN). With the production profile (64 MiB, 3 passes) that cost dominates
everything else, so by default only --pin-sample defenders send their PIN; the others stop at
the PIN prompt. ``--pin-sample 0`` sends every PIN. Prints one JSON object on its last line:
events_per_s (every event handled, PIN events included), non_pin_events_per_s,
pin_events_per_s, latency percentiles, and the Argon2 profile used.

Measured on the 2-vCPU development box (1,000 defenders): about 100-120 non-PIN events/s,
2-3 PIN events/s with the production Argon2id profile (~160 ms per verification, two per
PIN), ~50/s with the light one. The ceiling is the async database stack, not the flows: one
``SELECT 1`` through SQLAlchemy + aiosqlite costs ~0.55 ms here, and an event takes 7-11
statements in one transaction, with SQLite allowing one writer at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from argon2 import PasswordHasher

from core import security
from core.crypto import Keyring, Vault, generate_org_keypair
from core.db import create_engine, sessionmaker, transaction
from core.defenders import new_address
from core.messages import Inbound
from core.models import Base, Defender, DefenderStatus, Organisation, utcnow
from flows.engine import Engine

PIN = "4826"
DURESS = "7391"


async def seed(sessions: object, vault: Vault, n: int) -> None:
    """N active defenders with PINs (hashed once: every verification is still a real one)."""
    cancel, duress = (
        security.hash_pin(PIN, vault.keyring.pepper),
        security.hash_pin(DURESS, vault.keyring.pepper),
    )
    async with transaction(sessions) as s:  # type: ignore[arg-type]
        org = Organisation(id=uuid.uuid4(), name="Bench", public_key=generate_org_keypair()[0])
        s.add(org)
        await s.flush()
        defenders = []
        for i in range(n):
            defender = Defender(
                id=uuid.uuid4(),
                org_id=org.id,
                handle=f"bench-{i}",
                status=DefenderStatus.active,
                timezone="America/Bogota",
                cancel_pin_hash=cancel,
                duress_pin_hash=duress,
            )
            defenders.append(defender)
        s.add_all(defenders)
        await s.flush()
        for i, defender in enumerate(defenders):
            address = new_address(vault, "bench", f"chat-{i}")
            address.defender_id = defender.id
            s.add(address)


async def say(
    engine: Engine, i: int, n: int, text: str | None, choice: str | None, times: list[float]
) -> None:
    inbound = Inbound(
        channel="bench",
        address=f"chat-{i}",
        message_id=f"{i}-{n}",
        received_at=utcnow(),
        text=text,
        choice=choice,
    )
    started = time.perf_counter()
    await engine.handle(inbound)
    times.append(time.perf_counter() - started)


async def up_to_the_pin(engine: Engine, i: int, times: list[float]) -> None:
    steps = [("/checkin", None), (None, "1h"), ("/status", None), (None, "safe")]
    for n, (text, choice) in enumerate(steps):
        await say(engine, i, n, text, choice, times)


def ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 1)


async def main(args: argparse.Namespace) -> dict[str, object]:
    if args.argon2 == "light":  # quick runs: the engine and the database, not the KDF
        security._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with tempfile.TemporaryDirectory() as tmp:
        db = create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        async with db.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = sessionmaker(db)
        vault = Vault(Keyring.generate())
        await seed(sessions, vault, args.defenders)
        engine = Engine(sessions, vault)
        sample = args.defenders if args.pin_sample <= 0 else min(args.pin_sample, args.defenders)
        other: list[float] = []
        pins: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(*(up_to_the_pin(engine, i, other) for i in range(args.defenders)))
        menus = time.perf_counter() - started
        started = time.perf_counter()
        await asyncio.gather(*(say(engine, i, 9, PIN, None, pins) for i in range(sample)))
        pin_time = time.perf_counter() - started
        await db.dispose()
    events = len(other) + len(pins)
    return {
        "benchmark": "flows",
        "backend": "sqlite",
        "argon2": args.argon2,
        "defenders": args.defenders,
        "pin_events": len(pins),
        "events": events,
        "seconds": round(menus + pin_time, 3),
        "non_pin_events_per_s": round(len(other) / menus, 1),
        "non_pin_p50_ms": ms(other, 0.5),
        "non_pin_p99_ms": ms(other, 0.99),
        "pin_events_per_s": round(len(pins) / pin_time, 1) if pins else None,
        "pin_p50_ms": ms(pins, 0.5),
        "events_per_s": round(events / (menus + pin_time), 1),
    }


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--defenders", type=int, default=1000)
    parser.add_argument("--pin-sample", type=int, default=40, help="defenders who send a PIN")
    parser.add_argument(
        "--argon2",
        choices=("production", "light"),
        default="production",
        help="light: a cheap Argon2id profile, to measure the engine alone",
    )
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse()))))
