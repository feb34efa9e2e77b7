"""The sweep's check-in transitions, in batches: the hot path of a spike.

One transaction per batch and one statement per kind of work, no ORM objects: the claim
(``SELECT`` of the due rows, each joined to its defender and the defender's best address,
``LIMIT n``: under SQLite's write lock, taken first, or ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so any number of workers claim disjoint rows), the pure decisions of
``core.escalation``, then the outbox rows (one executemany) and the next timers (one UPDATE
per distinct outcome: a spike is one). A worker that dies before the commit leaves nothing
behind: the rows are due again, and their redone steps carry the same idempotency keys. Only
a missed deadline (rarer, and heavier) goes through ``alerts.raise_many``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import alerts, escalation, notices, outbox, recipients, wakeup
from core.claims import locked, write_lock
from core.crypto import Vault
from core.db import transaction
from core.escalation import Act, CheckInStep
from core.messages import Outbound
from core.models import (
    AlertKind,
    ChannelAddress,
    CheckIn,
    CheckInKind,
    CheckInState,
    Defender,
    DefenderStatus,
    Priority,
)
from core.outbox import Item, insert_rows
from core.sqlite import off_loop

P2, DEFENDER = int(Priority.P2), "defender"
_TABLE: Table = CheckIn.__table__  # type: ignore[assignment]
_T = _TABLE.c
_CLAIMED = (
    _T.id,
    _T.version,
    _T.kind,
    _T.state,
    _T.due_at,
    _T.grace_s,
    _T.pre_reminder_s,
    _T.next_action_at,
    _T.routine_time,
    _T.routine_days,
    _T.defender_id,
)
_D = Defender.__table__.c
_PEOPLE = (_D.id, _D.locale, _D.timezone, _D.discreet, _D.status)
# Each claimed row's best address, joined in the claim (not one more query for the batch).
_BEST = ChannelAddress.__table__.alias("best")
_BEST_ON = recipients.best_address_on(_BEST, _T.defender_id, _D.status)
# ``paused_reason`` of a routine re-armed while its defender was paused (the reminder out
# when they paused, answered or missed): it waits for a resume, the defender's or the desk's.
HELD = "held"
_STEP = (
    update(_TABLE)
    .where(_T.id == bindparam("b_id"), _T.version == bindparam("b_version"))
    .values(
        state=bindparam("b_state"),
        due_at=bindparam("b_due"),
        next_action_at=bindparam("b_next"),
        paused_reason=bindparam("b_reason"),
        version=_T.version + 1,
        lease_owner=None,
        lease_until=None,
    )
)


class Due(NamedTuple):
    """A claimed check-in and what its decision and its message need of the defender."""

    id: uuid.UUID
    version: int
    kind: CheckInKind
    state: CheckInState
    due_at: datetime
    grace_s: int
    pre_reminder_s: int | None
    next_action_at: datetime
    routine_time: str | None
    routine_days: str | None
    defender_id: uuid.UUID
    locale: str
    timezone: str
    discreet: bool
    status: DefenderStatus


def decide(r: Due, now: datetime) -> CheckInStep | None:
    next_due = None
    missed = r.state is CheckInState.reminded or now >= r.due_at + timedelta(seconds=r.grace_s)
    if r.routine_time and r.routine_days and missed:
        local = time.fromisoformat(r.routine_time)
        after = max(now, r.due_at)
        next_due = escalation.next_occurrence(local, r.routine_days, r.timezone, after)
    if r.status is DefenderStatus.deleted:
        return None
    return escalation.checkin_step(
        kind=r.kind,
        state=r.state,
        due_at=r.due_at,
        grace_s=r.grace_s,
        pre_reminder_s=r.pre_reminder_s,
        next_due=next_due,
        now=now,
    )


def message(r: Due, act: Act, now: datetime, cache: dict[tuple[Any, ...], Outbound]) -> Outbound:
    """The reminder for ``r``; the same text for everyone sharing a language is built once."""
    minutes = max(1, round((r.due_at - now).total_seconds() / 60)) if act is Act.pre_remind else 0
    key = (r.locale, r.discreet, act, minutes)
    if key not in cache:
        if act is Act.pre_remind:
            cache[key] = notices.pre_reminder(r.locale, minutes, discreet=r.discreet)
        else:
            cache[key] = notices.reminder(r.locale, discreet=r.discreet)
    return cache[key]


Addresses = dict[uuid.UUID, tuple[uuid.UUID, str]]


class Plan(NamedTuple):
    """A batch's steps, prepared: rows to write and the defenders whose alert opens."""

    due: list[datetime]  # when each step was due (the sweep measures lateness from it)
    updates: list[dict[str, Any]]
    rows: list[dict[str, Any]]  # outbox rows, encrypted, ready to insert
    missed: dict[uuid.UUID, datetime]  # defender -> the deadline they missed (earliest)


async def take(
    session: AsyncSession,
    vault: Vault,
    *,
    state: CheckInState,
    now: datetime,
    limit: int,
) -> list[datetime]:
    """Claim up to ``limit`` check-ins in ``state`` due at ``now`` (the most overdue first)
    and take their steps, all in the caller's transaction; returns when each was due.

    The claim needs no lease: SQLite's write lock (PostgreSQL: the rows' locks, SKIP LOCKED
    by other workers) holds until the commit that writes the steps, and a crash before it
    rolls everything back. Rows leased by a two-phase claim (``apply``) are left alone."""
    await write_lock(session)  # SQLite: the single writer's lock first, then read
    due = (_T.state == state) & (_T.next_action_at <= now)
    free = or_(_T.lease_until.is_(None), _T.lease_until < now)  # a two-phase claim (``apply``)
    pick = (
        select(*_CLAIMED, *_PEOPLE[1:], _BEST.c.id, _BEST.c.channel)
        .join(Defender.__table__, _D.id == _T.defender_id)
        .outerjoin(_BEST, _BEST_ON)
        .where(due, free)
        .order_by(_T.next_action_at)
        .limit(limit)
    )
    conn = await session.connection()  # Core rows: no ORM loading for thousands of them
    async with off_loop(session):  # thousands of rows: SQLite reads them off the event loop
        found = await conn.execute(locked(pick, session, skip=True, of=_TABLE))
    claimed, addresses = [], {}
    for *row, address_id, channel in found:
        due_row = Due._make(row)
        claimed.append(due_row)
        if address_id is not None:
            addresses[due_row.defender_id] = (address_id, channel)
    if not claimed:
        return []
    plan = prepare(vault, (claimed, addresses), now)
    await write(session, vault, plan, now)
    return plan.due


async def load(session: AsyncSession, claimed: Iterable[Any]) -> tuple[list[Due], Addresses]:
    """The claimed rows joined (in Python) to their defenders, and each defender's best
    address: one query each for the whole batch."""
    found = list(claimed)
    ids = list({r.defender_id for r in found})
    stmt = select(*_PEOPLE).where(Defender.id.in_(ids))
    people = {p.id: tuple(p)[1:] for p in await session.execute(stmt)}
    rows = [Due._make((*r, *people[r.defender_id])) for r in found if r.defender_id in people]
    return rows, await recipients.defender_addresses(session, ids)


def prepare(vault: Vault, loaded: tuple[list[Due], Addresses], now: datetime) -> Plan:
    """Decide every step (a decision is pure, so rows alike share one) and encrypt the
    messages; nothing here touches the database."""
    rows, addresses = loaded
    plan = Plan([], [], [], {})
    texts: dict[tuple[Any, ...], Outbound] = {}
    decided: dict[tuple[Any, ...], CheckInStep | None] = {}
    items: list[Item] = []
    for r in rows:
        same: tuple[Any, ...] = (r.kind, r.state, r.due_at, r.grace_s, r.pre_reminder_s)
        same += (r.routine_time, r.routine_days, r.timezone, r.status)
        if same in decided:
            step = decided[same]
        else:
            step = decided[same] = decide(r, now)
        plan.due.append(r.next_action_at)
        if step is None:  # the defender was deleted, or nothing is left to do
            plan.updates.append(_values(r, CheckInState.cancelled, r.due_at, r.next_action_at))
            continue
        state = step.state
        missed = Act.open_alert in step.acts
        if missed and state is CheckInState.armed and r.status is DefenderStatus.paused:
            state = CheckInState.paused  # the routine's next occurrence waits for the resume
        plan.updates.append(_values(r, state, step.due_at, step.next_action_at))
        address = addresses.get(r.defender_id)
        for act in step.acts:
            if act is Act.open_alert:
                missed_at = plan.missed.get(r.defender_id, r.due_at)
                plan.missed[r.defender_id] = min(missed_at, r.due_at)
            elif address is not None:
                address_id, channel = address
                key = f"c:{r.id.hex}:{r.version}:{act}|{channel}:{address_id.hex}"
                msg = message(r, act, now, texts)
                items.append(
                    Item(channel, P2, key, msg, address_id=address_id, recipient=DEFENDER)
                )
    plan.rows.extend(outbox.rows(vault, items, now=now))
    return plan


async def write(session: AsyncSession, vault: Vault, plan: Plan, now: datetime) -> None:
    """The outbox rows, the next timers and any alert to open, in the caller's transaction
    (whose rows must be claimed or locked: versions are not checked again here)."""
    await insert_rows(session, plan.rows)
    await write_steps(session, plan.updates)
    if plan.missed:
        found = await session.execute(select(Defender).where(Defender.id.in_(plan.missed)))
        people = list(found.scalars())
        await alerts.raise_many(
            session, vault, people, kind=AlertKind.missed_checkin, now=now, due=plan.missed
        )


async def apply(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    claimed: dict[uuid.UUID, int],
    *,
    owner: str,
    now: datetime,
) -> list[datetime]:
    """Take the steps of check-ins claimed earlier, in another transaction (``sweep.claim``):
    only rows still leased to us at the claimed version (a check-in since bumps it) are
    written; returns when each was due."""
    async with transaction(sessions) as session:
        await write_lock(session)
        stmt = select(*_CLAIMED).where(_T.id.in_(list(claimed)), _T.lease_owner == owner)
        still = [
            r for r in await session.execute(locked(stmt, session)) if claimed[r.id] == r.version
        ]
        if not still:
            return []
        plan = prepare(vault, await load(session, still), now)
        await write(session, vault, plan, now)
    return plan.due


async def write_steps(session: AsyncSession, updates: list[dict[str, Any]]) -> None:
    """Rows going to the same (state, due, next) in one statement: a spike is one group. The
    rows are locked and their versions checked, so the id is enough to address them."""
    groups: dict[tuple[Any, ...], list[uuid.UUID]] = defaultdict(list)
    for u in updates:
        groups[(u["b_state"], u["b_due"], u["b_next"])].append(u["b_id"])
    single = [u for u in updates if len(groups[(u["b_state"], u["b_due"], u["b_next"])]) == 1]
    if single:
        await session.execute(_STEP, single)
    for (state, due, nxt), ids in groups.items():
        if len(ids) > 1:
            stmt = (
                update(_TABLE)
                .where(_T.id.in_(ids))
                .values(
                    state=state,
                    due_at=due,
                    next_action_at=nxt,
                    paused_reason=_reason(state),
                    version=_T.version + 1,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            await session.execute(stmt)
    if updates:
        wakeup.touch(session, wakeup.TIMERS, min(u["b_next"] for u in updates))


def _values(r: Due, state: CheckInState, due: datetime, nxt: datetime) -> dict[str, Any]:
    return {
        "b_id": r.id,
        "b_version": r.version,
        "b_state": state,
        "b_due": due,
        "b_next": nxt,
        "b_reason": _reason(state),
    }


def _reason(state: CheckInState) -> str | None:
    return HELD if state is CheckInState.paused else None
