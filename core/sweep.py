"""The sweep: claim due timers and alerts, decide (``core.escalation``), write the outcome.

Two transactions per batch. The claim is one statement: ``UPDATE … SET lease, version+1 WHERE
id IN (SELECT … due … LIMIT n [FOR UPDATE SKIP LOCKED]) RETURNING id, version``; on SQLite the
single writer makes it atomic, on PostgreSQL SKIP LOCKED lets any number of workers claim
disjoint rows. Then, under a lock, the rows still holding our lease *and* the claimed version
(a check-in or an acknowledgement since bumps it) get their transition, its outbox rows and
their next timer in one transaction. A worker that dies in between leaves a lease that expires;
a worker that wakes up late finds the version moved on and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import actions, escalation, timers
from core.claims import locked, write_lock
from core.crypto import Vault
from core.db import transaction
from core.models import Alert, AlertState, CheckIn, CheckInState, Defender

LIVE = (CheckInState.armed, CheckInState.reminded)
OPEN = (AlertState.triggered, AlertState.acknowledged)

Observe = Callable[[float], None]  # lateness in seconds of each step taken


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


class Sweep:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        *,
        owner: str,
        batch: int = 1000,
        lease_s: float = 30.0,
        observe: Observe | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.sessions, self.vault, self.owner = sessions, vault, owner
        self.batch, self.lease_s = batch, lease_s
        self.observe, self.clock = observe, clock
        self.steps = 0  # transitions committed by this sweeper (tests add them up)

    async def run(self, now: datetime) -> int:
        """Everything due at ``now``: check-ins first (they open alerts), then alerts."""
        done = 0
        for step in (self.due_checkins, self.due_alerts):
            while (n := await step(now)) > 0:
                done += n
        return done

    async def _alert_steps(
        self, s: AsyncSession, claimed: dict[uuid.UUID, int], now: datetime
    ) -> list[datetime]:
        await write_lock(s)
        stmt = (
            select(Alert)
            .where(Alert.id.in_(list(claimed)), Alert.lease_owner == self.owner)
            .execution_options(populate_existing=True)
        )
        found = await s.execute(locked(stmt, s, of=Alert))
        mine = [
            a for a in found.scalars() if claimed[a.id] == a.version and a.next_step_at is not None
        ]
        people = select(Defender).where(Defender.id.in_({a.defender_id for a in mine}))
        defenders = {d.id: d for d in (await s.execute(people)).scalars()}
        steps, late = [], []
        for alert in mine:
            policy = actions.policy(alert)
            step = escalation.alert_step(
                kind=alert.kind, state=alert.state, step=alert.step, policy=policy, now=now
            )
            if step is not None:
                assert alert.next_step_at is not None
                late.append(alert.next_step_at)
                steps.append((alert, defenders[alert.defender_id], step))
            alert.version += 1
            alert.lease_owner, alert.lease_until = None, None
        await actions.perform_many(s, self.vault, steps, now=now)
        return late

    def _observed(self, due: list[datetime]) -> None:
        if self.observe is not None and self.clock is not None and due:
            at = self.clock()
            for d in due:
                self.observe(max(0.0, (at - d).total_seconds()))

    async def due_checkins(self, now: datetime) -> int:
        # Deadlines whose grace ran out (alerts to open) before mere reminders.
        states = (CheckInState.reminded, CheckInState.armed)
        claimed = await self._take(CheckIn, CheckIn.next_action_at, states, now)
        if not claimed:
            return 0
        late = await timers.apply(self.sessions, self.vault, claimed, owner=self.owner, now=now)
        self.steps += len(late)
        self._observed(late)
        return len(claimed)

    async def due_alerts(self, now: datetime) -> int:
        claimed = await self._take(Alert, Alert.next_step_at, OPEN, now)
        if not claimed:
            return 0
        async with transaction(self.sessions) as s:
            late = await self._alert_steps(s, claimed, now)
        self.steps += len(late)
        self._observed(late)
        return len(claimed)

    async def _take(
        self, model: Any, due_at: Any, states: tuple[Any, ...], now: datetime
    ) -> dict[uuid.UUID, int]:
        """Claim a batch: state by state, the most overdue first (an index range, no sort)."""
        free = or_(model.lease_until.is_(None), model.lease_until < now)
        for state in states:
            due = (model.state == state) & (due_at <= now)
            async with self.sessions() as reader:  # an idle sweep writes nothing at all
                if (await reader.execute(select(model.id).where(due, free).limit(1))).first():
                    break
        else:
            return {}
        async with transaction(self.sessions) as s:
            return await claim(
                s,
                model,
                due,
                now=now,
                owner=self.owner,
                lease_s=self.lease_s,
                limit=self.batch,
                order=due_at,
            )


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
