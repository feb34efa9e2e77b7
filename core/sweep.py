"""The sweep: claim due timers and alerts, decide (``core.escalation``), write the outcome.

One transaction per batch, committed as soon as the batch is written: the claim (SQLite: the
write lock, then the due rows; PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so any number of
workers claim disjoint rows), the pure decisions, and each transition with its outbox rows
and its next timer. Row locks (or SQLite's single writer) hold until that commit, so no other
worker or request can change a claimed row in between, and a worker that dies mid-batch
leaves nothing half done: the rows are due again and the redone steps carry the same
idempotency keys. Every transition bumps the row's ``version``, the fence that makes a
decision read before it stale (``claim`` + ``timers.apply``, the two-phase form, check it).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import actions, broadcast_resume, escalation, rollcall_closing, timers
from core.claims import locked, write_lock
from core.crypto import Vault
from core.db import retried, transaction
from core.models import Alert, AlertState, CheckIn, CheckInState, Defender

LIVE = (CheckInState.armed, CheckInState.reminded)
OPEN = (AlertState.triggered, AlertState.acknowledged)

FIRST_BATCH = 64  # a spike's first batch: committed in milliseconds, then batches double
# The largest batch. Every commit writes each page it dirtied to the WAL (and may checkpoint),
# and rows scattered over an index (the outbox's keys and addresses) share more pages in a
# larger batch: 2000 and 4000 took a spike with about 10% less CPU per step than 1000, alike
# within noise (bench/escalation.py). SQLite's write lock is held meanwhile, about 0.15 s a
# batch at 2000 (0.3 s at 4000): a panic written during a spike waits up to that long.
BATCH = 2000
Observe = Callable[[float], None]  # lateness in seconds of each step taken
# Claim and take up to ``limit`` steps in one state: (rows claimed, when each step was due).
Take = Callable[[AsyncSession, Any, datetime, int], Awaitable[tuple[int, list[datetime]]]]


async def claim(
    session: AsyncSession,
    model: Any,
    due: Any,
    *,
    now: datetime,
    owner: str,
    lease_s: float,
    limit: int,
    order: Any = None,
) -> dict[uuid.UUID, int]:
    """Lease up to ``limit`` due rows of ``model`` (``order``: the most overdue first);
    returns {id: version} of those claimed."""
    free = or_(model.lease_until.is_(None), model.lease_until < now)
    pick = select(model.id).where(due, free).order_by(order).limit(limit)
    pick = locked(pick, session, skip=True)
    stmt = (
        update(model)
        .where(model.id.in_(pick.scalar_subquery()))
        .values(
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_s),
            version=model.version + 1,
        )
        .returning(model.id, model.version)
        .execution_options(synchronize_session=False)
    )
    return dict((await session.execute(stmt)).all())


def due_probe(model: Any, due_at: Any, state: Any) -> Any:
    """Whether anything unleased in ``state`` is due at ``now``: the earliest such row, read
    in the index's order. Not an unordered LIMIT 1: with rows due all week, PostgreSQL may
    expect one among the first few it reads and scan the table, all of it when none is."""
    now: Any = bindparam("now")
    free = or_(model.lease_until.is_(None), model.lease_until < now)
    due = (model.state == state) & (due_at <= now)
    return select(model.id).where(due, free).order_by(due_at).limit(1)


class Sweep:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        *,
        owner: str,
        batch: int = BATCH,
        lease_s: float = 30.0,
        observe: Observe | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.sessions, self.vault, self.owner = sessions, vault, owner
        self.batch, self.lease_s = batch, lease_s
        self.observe, self.clock = observe, clock
        self.steps = 0  # transitions committed by this sweeper (tests add them up)

    async def run(self, now: datetime) -> int:
        """Everything due at ``now``: check-ins first (they open alerts), then alerts, then
        the roll-calls to close and the broadcasts' fan-outs to finish (P3: after anything
        that can save a life)."""
        done = await self.due_checkins(now) + await self.due_alerts(now)
        done += await rollcall_closing.close_due(self.sessions, self.vault, now)
        return done + await broadcast_resume.resume_due(self.sessions, self.vault, now)

    async def due_checkins(self, now: datetime) -> int:
        """Deadlines whose grace ran out (alerts to open) before mere reminders."""
        states = (CheckInState.reminded, CheckInState.armed)
        return await self._batches(CheckIn, CheckIn.next_action_at, states, now, self._checkins)

    async def due_alerts(self, now: datetime) -> int:
        return await self._batches(Alert, Alert.next_step_at, OPEN, now, self._alerts)

    async def _batches(
        self, model: Any, due_at: Any, states: tuple[Any, ...], now: datetime, take: Take
    ) -> int:
        """State by state, the most overdue first (an index range, no sort), one committed
        transaction per batch. Batches start small and double, so the first steps of a spike
        are committed within milliseconds of falling due, and the rest follow continuously."""
        done, size = 0, min(self.batch, FIRST_BATCH)
        for state in states:
            if not await self._any(due_probe(model, due_at, state), now):
                continue  # an idle sweep writes nothing at all
            while True:
                claimed, late = await retried(
                    partial(self._batch, take, state, now, size), what="sweep"
                )
                self.steps += len(late)
                self._observed(late)
                done += claimed
                if claimed < size:
                    break
                size = min(self.batch, size * 2)
        return done

    async def _batch(
        self, take: Take, state: Any, now: datetime, size: int
    ) -> tuple[int, list[datetime]]:
        """One batch, claimed and stepped in one transaction; a deadlock PostgreSQL aborts it
        for (40P01) rolls back its claim too, so it runs again whole (``core.db.retried``)."""
        async with transaction(self.sessions) as s:
            return await take(s, state, now, size)

    async def _checkins(
        self, s: AsyncSession, state: Any, now: datetime, limit: int
    ) -> tuple[int, list[datetime]]:
        late = await timers.take(s, self.vault, state=state, now=now, limit=limit)
        return len(late), late

    async def _alerts(
        self, s: AsyncSession, state: Any, now: datetime, limit: int
    ) -> tuple[int, list[datetime]]:
        """Claim due alerts (SQLite: under the write lock; PostgreSQL: FOR UPDATE SKIP LOCKED,
        held until this transaction commits their steps) and take their next step."""
        await write_lock(s)
        free = or_(Alert.lease_until.is_(None), Alert.lease_until < now)
        stmt = (
            select(Alert)
            .where(Alert.state == state, Alert.next_step_at <= now, free)
            .order_by(Alert.next_step_at)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        found = list((await s.execute(locked(stmt, s, skip=True, of=Alert))).scalars())
        people = select(Defender).where(Defender.id.in_({a.defender_id for a in found}))
        defenders = {d.id: d for d in (await s.execute(people)).scalars()}
        steps, late = [], []
        for alert in found:
            policy = actions.policy(alert)
            step = escalation.alert_step(
                kind=alert.kind, state=alert.state, step=alert.step, policy=policy, now=now
            )
            if step is not None:
                assert alert.next_step_at is not None
                late.append(alert.next_step_at)
                steps.append((alert, defenders[alert.defender_id], step))
            alert.version += 1  # the fence: a decision read before this commit is stale
            alert.lease_owner, alert.lease_until = None, None
        await actions.perform_many(s, self.vault, steps, now=now)
        return len(found), late

    def _observed(self, due: list[datetime]) -> None:
        """Lateness of each step: its commit (just done) minus when it was due."""
        if self.observe is not None and self.clock is not None and due:
            at = self.clock()
            for d in due:
                self.observe(max(0.0, (at - d).total_seconds()))

    async def _any(self, probe: Any, now: datetime) -> bool:
        """``due_probe``'s answer: one index probe, no write."""
        async with self.sessions() as reader:
            return (await reader.execute(probe, {"now": now})).first() is not None


async def lag(session: AsyncSession, now: datetime) -> float:
    """Seconds the oldest due timer or alert step has been waiting (0 when none is late)."""
    oldest = await earliest(session)
    return 0.0 if oldest is None or oldest > now else (now - oldest).total_seconds()


async def earliest(session: AsyncSession, *, after: datetime | None = None) -> datetime | None:
    """When the next thing is due (after ``after``); one index probe per state, so the cost
    does not grow with the number of armed timers."""
    checkin_due, alert_due = CheckIn.next_action_at, Alert.next_step_at
    probes = [
        select(checkin_due)
        .where(CheckIn.state == st, checkin_due > after if after else checkin_due.is_not(None))
        .order_by(checkin_due)
        .limit(1)
        for st in LIVE
    ] + [
        select(alert_due)
        .where(Alert.state == st, alert_due > after if after else alert_due.is_not(None))
        .order_by(alert_due)
        .limit(1)
        for st in OPEN
    ]
    found = [
        v for p in probes if (v := (await session.execute(p)).scalar_one_or_none()) is not None
    ]
    return min(found, default=None)
