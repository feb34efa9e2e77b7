"""The sweep's check-in transitions, in batches: the hot path of a spike.

Core statements rather than ORM objects: thousands of deadlines can fall in the same second.
Only a missed deadline (rarer, and heavier) goes through ``alerts.raise_alert``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import Row, Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import alerts, escalation, notices, outbox, recipients, wakeup
from core.claims import locked, write_lock
from core.crypto import Vault
from core.db import transaction
from core.escalation import Act, CheckInStep
from core.messages import Outbound
from core.models import AlertKind, CheckIn, CheckInState, Defender, DefenderStatus, Priority
from core.outbox import Item, insert_rows

P2, DEFENDER = int(Priority.P2), "defender"
AnyRow = Row[*tuple[Any, ...]]
_TABLE: Table = CheckIn.__table__  # type: ignore[assignment]
_COLUMNS = (
    CheckIn.id,
    CheckIn.version,
    CheckIn.kind,
    CheckIn.state,
    CheckIn.due_at,
    CheckIn.grace_s,
    CheckIn.pre_reminder_s,
    CheckIn.next_action_at,
    CheckIn.routine_time,
    CheckIn.routine_days,
    Defender.id.label("defender_id"),
    Defender.locale,
    Defender.timezone,
    Defender.discreet,
    Defender.status,
)
_STEP = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("b_id"), _TABLE.c.version == bindparam("b_version"))
    .values(
        state=bindparam("b_state"),
        due_at=bindparam("b_due"),
        next_action_at=bindparam("b_next"),
        version=_TABLE.c.version + 1,
        lease_owner=None,
        lease_until=None,
    )
)


def decide(r: AnyRow, now: datetime) -> CheckInStep | None:
    next_due = None
    if r.routine_time and r.routine_days and now >= r.due_at + timedelta(seconds=r.grace_s):
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


def message(
    r: AnyRow, act: Act, now: datetime, cache: dict[tuple[Any, ...], Outbound]
) -> Outbound:
    """The reminder for ``r``; the same text for everyone sharing a language is built once."""
    minutes = max(1, round((r.due_at - now).total_seconds() / 60)) if act is Act.pre_remind else 0
    key = (r.locale, r.discreet, act, minutes)
    if key not in cache:
        if act is Act.pre_remind:
            cache[key] = notices.pre_reminder(r.locale, minutes, discreet=r.discreet)
        else:
            cache[key] = notices.reminder(r.locale, discreet=r.discreet)
    return cache[key]


@dataclass
class Plan:
    """One check-in's step, prepared (and its messages encrypted) before any lock is taken."""

    due: datetime
    update: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)  # outbox rows, ready to insert
    missed: uuid.UUID | None = None  # the defender whose alert opens


async def apply(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    claimed: dict[uuid.UUID, int],
    *,
    owner: str,
    now: datetime,
) -> list[datetime]:
    """Take the due step of each claimed check-in still ours; returns their due times.

    Reading and encrypting happen before the write transaction, so workers sharing SQLite
    overlap that work with each other's writes and hold the single write lock briefly; under
    the lock, only rows still at the claimed version (and still leased to us) are written."""
    async with sessions() as reader:
        stmt = (
            select(*_COLUMNS)
            .join(Defender, Defender.id == CheckIn.defender_id)
            .where(CheckIn.id.in_(list(claimed)), CheckIn.lease_owner == owner)
        )
        rows = [r for r in await reader.execute(stmt) if claimed.get(r.id) == r.version]
        addresses = await recipients.defender_addresses(reader, {r.defender_id for r in rows})
    plans = prepare(vault, rows, addresses, now)
    async with transaction(sessions) as session:
        await write_lock(session)
        check = select(CheckIn.id, CheckIn.version).where(
            CheckIn.id.in_(list(plans)), CheckIn.lease_owner == owner
        )
        still = await session.execute(locked(check, session))
        mine = [plans[i] for i, version in still if claimed[i] == version]
        await insert_rows(session, [row for p in mine for row in p.rows])
        await write_steps(session, [p.update for p in mine])
        missed = [p.missed for p in mine if p.missed is not None]
        if missed:
            found = await session.execute(select(Defender).where(Defender.id.in_(missed)))
            people = list(found.scalars())
            await alerts.raise_many(session, vault, people, kind=AlertKind.missed_checkin, now=now)
    return [p.due for p in mine]


def prepare(
    vault: Vault,
    rows: list[AnyRow],
    addresses: dict[uuid.UUID, tuple[uuid.UUID, str]],
    now: datetime,
) -> dict[uuid.UUID, Plan]:
    plans: dict[uuid.UUID, Plan] = {}
    texts: dict[tuple[Any, ...], Outbound] = {}
    for r in rows:
        step = decide(r, now)
        if step is None:  # the defender was deleted, or nothing is left to do
            plans[r.id] = Plan(
                r.next_action_at, _values(r, CheckInState.cancelled, r.due_at, r.next_action_at)
            )
            continue
        plan = plans[r.id] = Plan(
            r.next_action_at, _values(r, step.state, step.due_at, step.next_action_at)
        )
        items = []
        address = addresses.get(r.defender_id)
        for act in step.acts:
            if act is Act.open_alert:
                plan.missed = r.defender_id
            elif address is not None:
                address_id, channel = address
                key = f"c:{r.id.hex}:{r.version}:{act}|{channel}:{address_id.hex}"
                msg = message(r, act, now, texts)
                items.append(
                    Item(channel, P2, key, msg, address_id=address_id, recipient=DEFENDER)
                )
        plan.rows = outbox.rows(vault, items, now=now)
    return plans


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
                .where(_TABLE.c.id.in_(ids))
                .values(
                    state=state,
                    due_at=due,
                    next_action_at=nxt,
                    version=_TABLE.c.version + 1,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            await session.execute(stmt)
    if updates:
        wakeup.touch(session, wakeup.TIMERS, min(u["b_next"] for u in updates))


def _values(r: AnyRow, state: CheckInState, due: datetime, nxt: datetime) -> dict[str, Any]:
    return {"b_id": r.id, "b_version": r.version, "b_state": state, "b_due": due, "b_next": nxt}
