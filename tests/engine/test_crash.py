"""Crash safety and concurrency with real worker processes (both backends).

A worker is killed with SIGKILL at random moments of a spike and restarted: every due step
is still delivered, at least once, and a repeat is the same outbox row (the same key).
Three workers on one PostgreSQL database never take a step twice.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import Keyring, Vault, write_keyring
from core.db import create_engine, sessionmaker, transaction
from core.models import (
    Alert,
    AlertEvent,
    Base,
    CheckIn,
    CheckInKind,
    Consent,
    Defender,
    DefenderStatus,
    EscalationPolicy,
    Organisation,
    OutboxMessage,
    OutboxState,
    Responder,
    Role,
    TrustedContact,
    utcnow,
)
from tests.engine.conftest import address

TIMERS = 300
ROOT = Path(__file__).resolve().parents[2]
FAST = {"pre_reminder_s": None, "grace_s": 1, "desk_after_s": 1, "repeat_s": 3600}


async def population(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> None:
    """TIMERS defenders, each with a contact, due 1.5-2.5 s from now; one responder on duty."""
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk")
        s.add(org)
        await s.flush()
        s.add(EscalationPolicy(org_id=org.id, name="fast", steps=FAST, is_default=True))
        responder = Responder(
            id=uuid.uuid4(),
            org_id=org.id,
            username="r",
            role=Role.responder,
            password_hash="x",
            on_duty=True,
        )
        s.add(responder)
        people = [
            Defender(id=uuid.uuid4(), org_id=org.id, handle=f"h{n}", status=DefenderStatus.active)
            for n in range(TIMERS)
        ]
        s.add_all(people)
        await s.flush()
        s.add(address(vault, "standin", "desk", responder_id=responder.id))
        contacts = [address(vault, "standin", f"c{n}") for n in range(TIMERS)]
        s.add_all(contacts)
        s.add_all(
            address(vault, "standin", f"d{n}", defender_id=d.id) for n, d in enumerate(people)
        )
        await s.flush()
        s.add_all(
            TrustedContact(defender_id=d.id, consent=Consent.confirmed, address_id=c.id)
            for d, c in zip(people, contacts, strict=True)
        )
        now = utcnow()
        for n, d in enumerate(people):
            due = now + timedelta(seconds=1.5 + n / TIMERS)
            s.add(
                CheckIn(
                    defender_id=d.id,
                    kind=CheckInKind.timer,
                    due_at=due,
                    next_action_at=due,
                    grace_s=FAST["grace_s"],
                    pre_reminder_s=None,
                )
            )


def start(db_url: str, key: Path, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.engine.crashworker", db_url, str(key), str(log)]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def finished(sessions: async_sessionmaker[AsyncSession]) -> bool:
    async with sessions() as s:
        told = await s.scalar(select(func.count()).select_from(Alert).where(Alert.step >= 2))
        waiting = await s.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.state != OutboxState.delivered)
        )
    return told == TIMERS and waiting == 0


async def wait_until_finished(sessions: async_sessionmaker[AsyncSession], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await finished(sessions):
        assert time.monotonic() < deadline, "the workers did not finish the spike in time"
        await asyncio.sleep(0.25)


async def check(sessions: async_sessionmaker[AsyncSession], log: Path) -> Counter[tuple[str, str]]:
    """Everything delivered, each logical message is one outbox row, each step taken once."""
    lines = Counter(tuple(line.split("\t", 1)) for line in log.read_text().splitlines())
    by_address = Counter(a for a, _t in lines)
    for n in range(TIMERS):  # a late sweep sends the second reminder without the first
        assert by_address[f"d{n}"] in (1, 2) and by_address[f"c{n}"] == 1
    assert len({t for a, t in lines if a == "desk"}) == TIMERS  # one desk notice per defender
    async with sessions() as s:
        rows = await s.execute(
            select(
                OutboxMessage.address_id,
                OutboxMessage.priority,
                OutboxMessage.alert_id,
                func.count(),
            ).group_by(OutboxMessage.address_id, OutboxMessage.priority, OutboxMessage.alert_id)
        )
        assert {count for *_k, count in rows} == {1}  # no message was queued twice
        queued = await s.scalar(select(func.count()).select_from(OutboxMessage))
        assert queued == sum(by_address.values())  # every row queued was delivered
        steps = await s.execute(
            select(AlertEvent.alert_id, AlertEvent.detail).where(AlertEvent.kind == "step")
        )
        taken = Counter((alert_id, detail["step"]) for alert_id, detail in steps)
        assert len(taken) == 2 * TIMERS and set(taken.values()) == {1}  # no step twice
        states = await s.execute(select(CheckIn.state, func.count()).group_by(CheckIn.state))
        assert {str(st): n for st, n in states} == {"missed": TIMERS}
    return lines


@pytest.fixture
def key_file(tmp_path: Path, keyring: Keyring) -> Path:
    path = tmp_path / "master.key"
    write_keyring(path, keyring)
    return path


async def test_it_loses_nothing_when_a_worker_is_killed_mid_spike(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    db_url: str,
    key_file: Path,
    tmp_path: Path,
) -> None:
    await population(sessions, vault)
    log = tmp_path / "deliveries.log"
    rng = random.Random(4)  # a fixed seed: a failure can be replayed
    worker = start(db_url, key_file, log)
    try:
        for _ in range(6):
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker = start(db_url, key_file, log)
        await wait_until_finished(sessions, 45)
    finally:
        worker.kill()
        worker.wait()
    lines = await check(sessions, log)
    assert sum(lines.values()) >= len(lines)  # repeats are allowed (at least once), losses not


async def test_it_shares_one_postgresql_between_three_workers(
    pg_url: str, vault: Vault, key_file: Path, tmp_path: Path
) -> None:
    engine = create_engine(pg_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    sessions = sessionmaker(engine)
    try:
        await population(sessions, vault)
        log = tmp_path / "deliveries.log"
        workers = [start(pg_url, key_file, log) for _ in range(3)]
        try:
            await wait_until_finished(sessions, 45)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(timeout=10)
        await check(sessions, log)  # each step once, though three workers raced for each
    finally:
        await engine.dispose()
