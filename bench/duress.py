"""R8's latency: the phone's answer to the cancel PIN against its answer to the duress PIN.

Usage: python bench/duress.py [--runs 200] [--contacts 5] [--responders 5] [--rate 10]
                              [--send-ms 30] [--argon2 light|production]

SECURITY.md R8: the duress PIN, typed where the cancel PIN goes, must look the same to whoever
holds the phone, "at similar latency" (compared over 200 runs). Each run is a defender (with
``--contacts`` trusted contacts, and ``--responders`` responders on duty, all on the one
channel) who raised a panic and asked to call it off; the panic's own notices are marked
sent, so every run starts with an empty queue, and a second passes (the person types). Then
the defender sends a PIN: the cancel PIN in even runs (the alert closes: all-clears to
everyone who was told), the duress PIN in odd ones (the alert stays on and a duress alert
notifies the same people). The channel takes ``--rate`` messages a second (Signal's 10 by
default) and each send takes ``--send-ms``; the real dispatcher runs in the same process,
woken by the commit, as in ``amparo serve``.

A run's latency is from handing the PIN to the flow engine until the channel is asked to send
the answer to the defender's own chat; the next run starts once the queue is empty again. Both
PINs cost the same Argon2id verifications (both hashes are always checked): ``light`` (the
default) keeps that cost, equal on both sides, from drowning the rest. SQLite, one process.
The last line printed is one JSON object: p50, p95 and mean for each PIN, and the ratios
duress / cancel.
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

from argon2 import PasswordHasher
from sqlalchemy import func, select, update

from core import security
from core.crypto import Keyring, Vault, generate_org_keypair
from core.db import create_engine, sessionmaker, transaction
from core.defenders import new_address
from core.dispatch import Dispatcher
from core.messages import Address, Delivered, Inbound, Outbound
from core.models import (
    Base,
    Consent,
    Defender,
    DefenderStatus,
    Organisation,
    OutboxMessage,
    OutboxState,
    Responder,
    Role,
    TrustedContact,
    utcnow,
)
from core.ratelimit import Limit
from flows.engine import Engine

CHANNEL = "bench"
PIN, DURESS = "4826", "7391"
WAITING = (OutboxState.pending, OutboxState.sending)
PAUSE_S = 1.0


class Channel:
    """A channel whose sends take ``send_s``; it notes when each defender's answer left."""

    def __init__(self, send_s: float) -> None:
        self.send_s = send_s
        self.answered: dict[str, float] = {}  # defender chat -> when its answer was sent

    async def run(self, inbox: object) -> None:
        await asyncio.Event().wait()

    async def send(self, to: Address, message: Outbound) -> Delivered:
        if to.value.startswith("defender-"):
            self.answered.setdefault(to.value, time.perf_counter())
        await asyncio.sleep(self.send_s)
        return Delivered(message_id=uuid.uuid4().hex)


async def seed(sessions: object, vault: Vault, args: argparse.Namespace) -> None:
    """One desk with its responders on duty; ``runs`` defenders with their contacts."""
    cancel = security.hash_pin(PIN, vault.keyring.pepper)
    duress = security.hash_pin(DURESS, vault.keyring.pepper)
    async with transaction(sessions) as s:  # type: ignore[arg-type]
        org = Organisation(id=uuid.uuid4(), name="Bench", public_key=generate_org_keypair()[0])
        s.add(org)
        await s.flush()
        for i in range(args.responders):
            responder = Responder(
                id=uuid.uuid4(),
                org_id=org.id,
                username=f"r{i}",
                role=Role.responder,
                password_hash="x",
                on_duty=True,
            )
            s.add(responder)
            await s.flush()
            place = new_address(vault, CHANNEL, f"responder-{i}")
            place.responder_id = responder.id
            s.add(place)
        for i in range(args.runs):
            defender = Defender(
                id=uuid.uuid4(),
                org_id=org.id,
                handle=f"bench-{i}",
                status=DefenderStatus.active,
                locale="en",
                cancel_pin_hash=cancel,
                duress_pin_hash=duress,
            )
            s.add(defender)
            await s.flush()
            place = new_address(vault, CHANNEL, f"defender-{i}")
            place.defender_id = defender.id
            s.add(place)
            for n in range(args.contacts):
                where = new_address(vault, CHANNEL, f"contact-{i}-{n}")
                s.add(where)
                await s.flush()
                s.add(
                    TrustedContact(
                        id=uuid.uuid4(),
                        defender_id=defender.id,
                        consent=Consent.confirmed,
                        address_id=where.id,
                    )
                )


async def say(engine: Engine, i: int, n: int, text: str | None, choice: str | None) -> None:
    await engine.handle(
        Inbound(
            channel=CHANNEL,
            address=f"defender-{i}",
            message_id=f"{i}-{n}",
            received_at=utcnow(),
            text=text,
            choice=choice,
            language="en",
        )
    )


async def waiting(sessions: object) -> int:
    async with sessions() as s:  # type: ignore[operator]
        stmt = select(func.count()).where(OutboxMessage.state.in_(WAITING))
        return int((await s.execute(stmt)).scalar_one())


async def quiet(sessions: object) -> None:
    """Until the dispatcher has sent everything queued."""
    while await waiting(sessions):
        await asyncio.sleep(0.01)


async def run(engine: Engine, sessions: object, channel: Channel, i: int) -> float:
    """Raise, ask to call off, then the PIN; seconds until its answer was sent."""
    for n, (text, choice) in enumerate(
        (("/alert", None), (None, "skip"), (None, "no"), (None, "calloff"))
    ):
        await say(engine, i, n, text, choice)
    async with transaction(sessions) as s:  # type: ignore[arg-type]
        await s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.state == OutboxState.pending)
            .values(state=OutboxState.delivered, payload_enc=None, dek=None)
        )
    await quiet(sessions)
    await asyncio.sleep(PAUSE_S)  # a person reads, then types: the channel's bucket refills
    channel.answered.pop(f"defender-{i}", None)  # what it was sent before the PIN
    started = time.perf_counter()
    await say(engine, i, 9, PIN if i % 2 == 0 else DURESS, None)
    while f"defender-{i}" not in channel.answered:
        await asyncio.sleep(0.001)
    latency = channel.answered[f"defender-{i}"] - started
    await quiet(sessions)
    return latency


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    if args.argon2 == "light":
        security._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with tempfile.TemporaryDirectory() as tmp:
        db = create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        async with db.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = sessionmaker(db)
        vault = Vault(Keyring.generate())
        await seed(sessions, vault, args)
        channel = Channel(args.send_ms / 1000)
        limits = {CHANNEL: Limit(per_channel=args.rate, per_recipient=None)}
        dispatcher = Dispatcher(sessions, vault, {CHANNEL: channel}, owner="bench", limits=limits)
        delivering = asyncio.create_task(dispatcher.run())
        engine = Engine(sessions, vault)
        found: dict[str, list[float]] = {"cancel": [], "duress": []}
        try:
            for i in range(args.runs):
                latency = await run(engine, sessions, channel, i)
                found["cancel" if i % 2 == 0 else "duress"].append(latency)
        finally:
            delivering.cancel()
            await asyncio.gather(delivering, return_exceptions=True)
            await db.dispose()
    cancel, duress = summary(found["cancel"]), summary(found["duress"])
    told = args.contacts + args.responders
    return {
        "benchmark": "duress",
        "backend": "sqlite",
        "argon2": args.argon2,
        "runs": args.runs,
        "told": told,
        "rate_per_s": args.rate,
        "send_ms": args.send_ms,
        "cancel": cancel,
        "duress": duress,
        "p50_ratio": round(duress["p50_ms"] / cancel["p50_ms"], 2),
        "p95_ratio": round(duress["p95_ms"] / cancel["p95_ms"], 2),
    }


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="PINs sent, half of each")
    parser.add_argument("--contacts", type=int, default=5, help="trusted contacts a defender has")
    parser.add_argument("--responders", type=int, default=5, help="responders on duty")
    parser.add_argument("--rate", type=float, default=10.0, help="the channel's messages/s")
    parser.add_argument("--send-ms", type=float, default=30.0, help="how long a send takes")
    parser.add_argument(
        "--argon2",
        choices=("production", "light"),
        default="light",
        help="production: the real Argon2id profile (about 0.3 s more on both PINs)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse()))))
