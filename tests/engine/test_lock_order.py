"""A desk's policy change and defenders' check-ins at the same moment wait for each other; on
PostgreSQL they must never deadlock (40P01 aborts one: a check-in or a policy edit lost).

Each round forces the overlap: a blocker transaction holds the defenders' rows and the middle
one (by due time) of each one's check-ins; the desk's transaction and every defender's
check-in start and (PostgreSQL) are seen waiting on a lock, then the blocker commits and all
of them race for the same rows. Two that lock a defender's check-ins in opposite orders each
hold an end row by then, waiting for the middle one: released, they deadlock. On SQLite the
single writer serialises them; the test checks the outcome there too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core import alerts, checkins, desk_defenders
from core.claims import dialect, write_lock
from core.crypto import Vault
from core.db import create_engine, dispose, sessionmaker, transaction
from core.escalation import first_action_at
from core.models import (
    Alert,
    AlertState,
    CheckIn,
    CheckInKind,
    CheckInState,
    Defender,
    DefenderStatus,
    EscalationPolicy,
)
from core.sweep import Sweep
from tests.engine.conftest import T0, World, build_world

# PostgreSQL's rounds; SQLite's single writer allows no interleaving, and its busy waits
# (sleeps of growing length) make a round slower: a few rounds check the outcome there.
ROUNDS = {"postgresql": 30, "sqlite": 6}
PEOPLE = 4  # defenders sharing the organisation's policy
TIMES = ((12, 30), (12, 40), (12, 50))  # each one's routines: due within the hour at noon
MIDDLE = "12:40"  # the one the blocker holds
DAY = timedelta(days=1)
ASSIGNED = ({"grace_s": 300, "pre_reminder_s": 120}, {"grace_s": 600, "pre_reminder_s": 240})


@pytest.fixture
async def quick(
    db_url: str, engine: AsyncEngine
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test's database; PostgreSQL looks for a deadlock after 50 ms (not 1 s)
    and gives up on any lock after 10 s, so a broken lock order fails fast, never hangs."""
    if not db_url.startswith("postgresql"):
        yield sessionmaker(engine)
        return
    settings = {"deadlock_timeout": "50ms", "lock_timeout": "10s"}
    eng = create_engine(db_url, connect_args={"server_settings": settings})
    yield sessionmaker(eng)
    await dispose(eng)


def deadlock(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == "40P01" or "deadlock detected" in str(exc)


async def people(world: World) -> list[uuid.UUID]:
    """The world's defender and more, each with routines due within the hour at T0."""
    async with transaction(world.sessions) as s:
        ids = [world.defender_id]
        for n in range(1, PEOPLE):
            d = Defender(
                id=uuid.uuid4(),
                org_id=world.org_id,
                handle=f"lock-order-{n}-{uuid.uuid4().hex[:6]}",
                locale="es",
                status=DefenderStatus.active,
            )
            s.add(d)
            ids.append(d.id)
        await s.flush()
        for d_id in ids:
            for hour, minute in TIMES:
                due = T0.replace(hour=hour, minute=minute)
                s.add(
                    CheckIn(
                        defender_id=d_id,
                        kind=CheckInKind.routine,
                        state=CheckInState.armed,
                        due_at=due,
                        grace_s=900,
                        pre_reminder_s=600,
                        next_action_at=first_action_at(due, 600, T0),
                        routine_time=f"{hour:02d}:{minute:02d}",
                        routine_days="0123456",
                        version=1,
                        created_at=T0,
                    )
                )
    return ids


async def policy(world: World, steps: dict[str, int], *, default: bool) -> uuid.UUID:
    async with transaction(world.sessions) as s:
        p = EscalationPolicy(
            org_id=world.org_id,
            name=f"p-{uuid.uuid4().hex[:6]}",
            steps=steps,
            is_default=default,
            version=1,
        )
        s.add(p)
        await s.flush()
        return p.id


async def overlap(
    sessions: async_sessionmaker[AsyncSession], n: int, tasks: list[asyncio.Task[Any]]
) -> None:
    """Return once ``n`` backends of this database wait on a lock (PostgreSQL: the proof
    that the transactions overlap); SQLite has no such view: a moment for them to start."""
    async with sessions() as monitor:
        if dialect(monitor) != "postgresql":
            await asyncio.sleep(0.02)
            return
        stmt = text(
            "SELECT wait_event_type, wait_event, state, left(query, 60) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        for _ in range(1000):
            found = (await monitor.execute(stmt)).all()
            await monitor.rollback()  # pg_stat_activity holds still until the transaction ends
            if sum(1 for r in found if r[0] == "Lock") >= n:
                return
            if any(t.done() for t in tasks):  # one failed (or never waited): say why
                break
            await asyncio.sleep(0.005)
    done = [t.exception() or t.result() for t in tasks if t.done()]
    for t in tasks:
        t.cancel()
    raise AssertionError(f"the transactions never overlapped: {found}, finished: {done}")


async def race(
    world: World, ids: list[uuid.UUID], work: list[Callable[[], Awaitable[Any]]]
) -> None:
    """Run ``work`` (each its own transaction) while a blocker holds ``ids`` and the middle of
    their check-ins; release them together once every one waits (PostgreSQL), then require
    that all of them commit."""
    started: list[asyncio.Task[Any]] = []
    async with transaction(world.sessions) as blocker:
        await write_lock(blocker)  # SQLite: the single writer's lock
        if dialect(blocker) == "postgresql":
            who = select(Defender.id).where(Defender.id.in_(ids)).order_by(Defender.id)
            await blocker.execute(who.with_for_update(key_share=True))
            middle = CheckIn.defender_id.in_(ids) & (CheckIn.routine_time == MIDDLE)
            rows = select(CheckIn.id).where(middle).order_by(CheckIn.id)
            await blocker.execute(rows.with_for_update())
        started = [asyncio.create_task(w()) for w in work]  # type: ignore[arg-type]
        await overlap(world.sessions, len(work), started)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 20)
    failed = [e for e in done if isinstance(e, BaseException)]
    assert not [e for e in failed if deadlock(e)], f"deadlock: {failed}"
    if failed:
        raise failed[0]


async def check_in(world: World, d_id: uuid.UUID, now: datetime) -> None:
    async with transaction(world.sessions) as s:
        d = await s.get(Defender, d_id)
        assert d is not None
        await checkins.check_in(s, world.vault, defender=d, now=now)


async def edit(world: World, p_id: uuid.UUID, steps: dict[str, int], now: datetime) -> None:
    """What PUT /api/v1/policies/{id} does: the policy saved, then follow_policy."""
    async with transaction(world.sessions) as s:
        p = await s.get(EscalationPolicy, p_id)
        assert p is not None
        p.steps, p.version = steps, p.version + 1
        await s.flush()
        await checkins.follow_policy(s, org_id=world.org_id, now=now)


async def assign(world: World, d_id: uuid.UUID, p_id: uuid.UUID, now: datetime) -> None:
    """What PUT /api/v1/defenders/{id}/policy does: the defender row, then follow_policy."""
    async with transaction(world.sessions) as s:
        d = await s.get(Defender, d_id)
        assert d is not None
        ok = await desk_defenders.set_policy(
            s, world.vault, defender=d, policy_id=p_id, actor="test", now=now
        )
        assert ok


async def assert_rearmed(
    world: World, ids: list[uuid.UUID], now: datetime, steps: dict[uuid.UUID, dict[str, int]]
) -> None:
    """Every routine met for ``now`` and re-armed for the next day with its defender's
    policy as it is now: none lost, none with the policy of before."""
    async with world.sessions() as s:
        found = list(await s.execute(select(CheckIn).where(CheckIn.defender_id.in_(ids))))
        rows = [r for (r,) in found]
        assert len(rows) == len(ids) * len(TIMES)
        for r in rows:
            assert r.state is CheckInState.armed
            assert r.due_at.date() == (now + DAY).date()
            assert r.lease_owner is None
            want = steps[r.defender_id]
            assert (r.grace_s, r.pre_reminder_s) == (want["grace_s"], want["pre_reminder_s"])
            assert r.next_action_at == r.due_at - timedelta(seconds=want["pre_reminder_s"])
        for d_id in ids:
            d = await s.get(Defender, d_id)
            assert d is not None and d.last_checkin_at == now


@pytest.mark.parametrize("desk", ["edit", "assign"])
async def test_a_policy_change_and_check_ins_wait_for_each_other(
    quick: async_sessionmaker[AsyncSession], vault: Vault, desk: str
) -> None:
    world = await build_world(quick, vault)
    ids = await people(world)
    shared = await policy(world, {"grace_s": 900, "pre_reminder_s": 600}, default=True)
    others = [await policy(world, s, default=False) for s in ASSIGNED]
    async with quick() as s:
        rounds = ROUNDS[dialect(s)]
    for n in range(rounds):
        now = T0 + n * DAY
        work: list[Callable[[], Awaitable[Any]]] = []
        if desk == "edit":  # the organisation's default, shared by all, edited
            want = {"grace_s": 300 + 60 * n, "pre_reminder_s": 60 + 60 * (n % 10)}
            work.append(lambda want=want, now=now: edit(world, shared, want, now))
            steps = dict.fromkeys(ids, want)
        else:  # each defender given one policy or the other
            steps = {}
            for i, d_id in enumerate(ids):
                k = (n + i) % 2
                work.append(lambda d_id=d_id, k=k, now=now: assign(world, d_id, others[k], now))
                steps[d_id] = ASSIGNED[k]
        work += [lambda d_id=d_id, now=now: check_in(world, d_id, now) for d_id in ids]
        await race(world, ids, work)
        await assert_rearmed(world, ids, now, steps)


async def test_a_check_in_waits_for_the_sweep_opening_its_alert(
    quick: async_sessionmaker[AsyncSession], vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep claims every defender's missed routines (SKIP LOCKED) and, before it opens
    their alerts, each defender checks in (their row locked, waiting for the claimed ones)
    while the desk edits the shared policy. Opening an alert checks its defender's foreign
    key (FOR KEY SHARE): a defender row locked FOR UPDATE would make that wait, a deadlock."""
    world = await build_world(quick, vault)
    ids = await people(world)
    shared = await policy(world, {"grace_s": 900, "pre_reminder_s": 600}, default=True)
    claimed, go = asyncio.Event(), asyncio.Event()
    raise_many = alerts.raise_many

    async def paused(*args: Any, **kwargs: Any) -> Any:
        claimed.set()
        await go.wait()
        return await raise_many(*args, **kwargs)

    monkeypatch.setattr(alerts, "raise_many", paused)
    async with quick() as s:
        rounds = ROUNDS[dialect(s)] // 3
    for n in range(rounds):
        claimed.clear()
        go.clear()
        now = T0 + n * DAY + timedelta(hours=1, minutes=30)  # every grace over
        async with transaction(quick) as s:  # reminded, each routine's grace run out
            for r in (await s.execute(select(CheckIn))).scalars():
                r.state, r.due_at = CheckInState.reminded, r.due_at.replace(day=now.day)
                r.next_action_at = r.due_at + timedelta(seconds=r.grace_s)
        sweep = asyncio.create_task(Sweep(quick, vault, owner="w").due_checkins(now))
        await asyncio.wait_for(claimed.wait(), 10)
        want = {"grace_s": 300 + 60 * n, "pre_reminder_s": 60 + 60 * (n % 10)}
        work = [edit(world, shared, want, now)] + [check_in(world, d, now) for d in ids]
        started = [asyncio.create_task(w) for w in work]
        await overlap(quick, len(work), started)
        go.set()
        done = await asyncio.wait_for(asyncio.gather(sweep, *started, return_exceptions=True), 20)
        failed = [e for e in done if isinstance(e, BaseException)]
        assert not [e for e in failed if deadlock(e)], f"deadlock: {failed}"
        if failed:
            raise failed[0]
        assert done[0] == len(ids) * len(TIMES)  # every missed routine swept
        await assert_rearmed(world, ids, now, dict.fromkeys(ids, want))
        async with quick() as s:
            found = list(await s.execute(select(Alert).where(Alert.triggered_at == now)))
            assert sorted(a.defender_id for (a,) in found) == sorted(ids)
            assert {(a.state, a.outcome) for (a,) in found} == {(AlertState.resolved, "safe")}
