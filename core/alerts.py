"""Alerts: raise, find, lock; all in the caller's transaction. What the defender adds to one is
in ``core.alert_updates``; acknowledge, resolve and cancel are in ``core.alert_handling``.

Every change locks the alert (``lock``), bumps its ``version`` (so a sweep that claimed it drops
its stale decision) and clears the sweep's lease. One open alert per defender and kind:
``open_key``. Duress alerts never send anything to the defender's device and cannot be
cancelled from it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import actions, escalation
from core.claims import locked, write_lock
from core.crypto import Vault
from core.escalation import DEFAULT_POLICY, Policy
from core.models import (
    DO_NOT_CONTACT,
    Alert,
    AlertKind,
    AlertState,
    Defender,
    DefenderStatus,
    EscalationPolicy,
    Priority,
)

PRIORITY = {AlertKind.panic: Priority.P0, AlertKind.duress: Priority.P0}


def dedup_key(defender_id: uuid.UUID, kind: AlertKind) -> str:
    """The open key: one open alert per defender and kind. Each alert's own dedup key (by
    which the external desk acknowledges and resolves it) adds a suffix of its own (``_alert``)."""
    return f"{defender_id.hex}-{kind}"


def own_key(open_key: str, alert_id: uuid.UUID) -> str:
    """One alert's dedup key, never another's: a late retry of an external desk's "resolve"
    for an earlier alert must not close the defender's next panic (same defender and kind)."""
    return f"{open_key}-{alert_id.hex[:12]}"


async def policies_for(
    session: AsyncSession, defenders: Iterable[Defender]
) -> dict[uuid.UUID, Policy]:
    """Each defender's policy, else their organisation's default, else the built-in ladder."""
    people = list(defenders)
    chosen = {d.policy_id for d in people if d.policy_id is not None}
    stmt = select(EscalationPolicy).where(
        EscalationPolicy.org_id.in_({d.org_id for d in people}),
        EscalationPolicy.id.in_(chosen) | EscalationPolicy.is_default.is_(True),
    )
    rows = list((await session.execute(stmt)).scalars())
    by_id = {p.id: p for p in rows}
    defaults = {p.org_id: p for p in rows if p.is_default}
    found = {}
    for d in people:
        row = by_id.get(d.policy_id) if d.policy_id else None
        row = row if row is not None and row.org_id == d.org_id else defaults.get(d.org_id)
        found[d.id] = DEFAULT_POLICY if row is None else Policy.from_json(row.steps)
    return found


async def policy_for(session: AsyncSession, defender: Defender) -> Policy:
    return (await policies_for(session, [defender]))[defender.id]


async def open_alert(session: AsyncSession, key: str) -> Alert | None:
    stmt = select(Alert).where(Alert.open_key == key)
    return (await session.execute(locked(stmt, session))).scalar_one_or_none()


async def is_open(session: AsyncSession, defender_id: uuid.UUID, kind: AlertKind) -> bool:
    """Whether the defender has an alert of ``kind`` not yet resolved (one index probe)."""
    stmt = select(Alert.id).where(Alert.open_key == dedup_key(defender_id, kind)).limit(1)
    return (await session.execute(stmt)).first() is not None


async def raise_alert(
    session: AsyncSession, vault: Vault, *, defender: Defender, kind: AlertKind, now: datetime
) -> Alert:
    """Open an alert, or return the one of this kind already open; its first step is taken
    at once (panic and duress: the desk and the trusted contacts, at P0)."""
    return (await raise_many(session, vault, [defender], kind=kind, now=now))[defender.id]


async def raise_many(
    session: AsyncSession,
    vault: Vault,
    defenders: Iterable[Defender],
    *,
    kind: AlertKind,
    now: datetime,
    due: Mapping[uuid.UUID, datetime] | None = None,
) -> dict[uuid.UUID, Alert]:
    """``raise_alert`` for many defenders at once (a wave of missed check-ins); ``due``: the
    deadline each defender missed, kept on the timeline (the desk's page says it: the
    check-in's own row moves on to a routine's next deadline)."""
    people = {d.id: d for d in defenders}
    await write_lock(session)
    keys = [dedup_key(d, kind) for d in people]
    stmt = locked(select(Alert).where(Alert.open_key.in_(keys)), session)
    found = {a.defender_id: a for a in (await session.execute(stmt)).scalars()}
    new = [d for d in people.values() if d.id not in found]
    if found and kind in (AlertKind.panic, AlertKind.duress):
        await _raised_again(session, vault, list(found.values()), people, now)
    _missed_again(session, kind, found.values(), now, due)
    if not new:
        return found
    policies = await policies_for(session, new)
    wary = await not_to_contact(session, [d.id for d in new])
    created = [_alert(d, kind, policies[d.id], now, d.id in wary) for d in new]
    try:
        async with session.begin_nested():  # a unique open_key per defender and kind
            session.add_all(created)
    except IntegrityError:  # a concurrent transaction opened one of them (PostgreSQL)
        if len(new) > 1:
            for d in new:
                found.update(await raise_many(session, vault, [d], kind=kind, now=now, due=due))
            return found
        existing = await open_alert(session, dedup_key(new[0].id, kind))
        if existing is None:
            raise
        _missed_again(session, kind, [existing], now, due)
        return {**found, new[0].id: existing}
    actor = "engine" if kind is AlertKind.missed_checkin else "defender"
    session.add_all(
        actions.event(a, "triggered", now, actor=actor, kind=str(kind), **_deadline(a, due))
        for a in created
    )
    await _careful_too(session, [a for a in created if a.do_not_contact], now)
    steps = [
        (a, people[a.defender_id], escalation.opening(kind, policies[a.defender_id], now))
        for a in created
    ]
    await actions.perform_many(session, vault, steps, now=now)
    return {**found, **{a.defender_id: a for a in created}}


async def _raised_again(
    session: AsyncSession,
    vault: Vault,
    again: list[Alert],
    people: dict[uuid.UUID, Defender],
    now: datetime,
) -> None:
    """A defender pressing panic (or giving the duress PIN) again while that alert is open:
    on the timeline; and if a responder had acknowledged it, the desk hears at once and the
    alert waits for a responder again (the situation changed), not at the ack timeout. While
    nobody has acknowledged it, the ladder is already repeating to the desk."""
    steps = []
    for alert in again:
        alert = await lock(session, alert)
        session.add(actions.event(alert, "raised_again", now, actor="defender"))
        if alert.state is not AlertState.acknowledged:
            continue
        step = escalation.alert_step(
            kind=alert.kind,
            state=alert.state,
            step=alert.step,
            policy=actions.policy(alert),
            now=now,
        )
        if step is not None:
            steps.append((alert, people[alert.defender_id], replace(step, reason="raised_again")))
    await actions.perform_many(session, vault, steps, now=now)


def _deadline(alert: Alert, due: Mapping[uuid.UUID, datetime] | None) -> dict[str, str]:
    """The missed deadline for an event's detail (ISO 8601, UTC), if known."""
    at = None if due is None else due.get(alert.defender_id)
    if at is None:
        return {}
    return {"due_at": (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()}


def _missed_again(
    session: AsyncSession,
    kind: AlertKind,
    again: Iterable[Alert],
    now: datetime,
    due: Mapping[uuid.UUID, datetime] | None = None,
) -> None:
    """A further deadline missed while the defender's missed check-in alert is open: folded
    into that alert (one open alert per kind), and on its timeline for the desk to see."""
    if kind is AlertKind.missed_checkin:
        session.add_all(
            actions.event(alert, "missed_again", now, **_deadline(alert, due)) for alert in again
        )


async def not_to_contact(
    session: AsyncSession, ids: Iterable[uuid.UUID], *, org_id: uuid.UUID | None = None
) -> set[uuid.UUID]:
    """Those of the defenders with an open alert whose device must not be contacted (duress,
    a changed safety number, a hidden defender): any alert of theirs opened meanwhile is as
    careful. Else a missed check-in while under duress would ask the contacts to call the
    phone the duress alert told them not to, and send the desk's notices to the defender's
    own chats. The desk shows it on every alert of theirs (``org_id``: the desk's own)."""
    ids = set(ids)
    if not ids:
        return set()
    stmt = select(Alert.defender_id).where(
        Alert.defender_id.in_(ids), Alert.open_key.is_not(None), Alert.do_not_contact.is_(True)
    )
    if org_id is not None:
        stmt = stmt.where(Alert.org_id == org_id)
    return set((await session.execute(stmt)).scalars())


async def _careful_too(session: AsyncSession, careful: list[Alert], now: datetime) -> None:
    """The defender's alerts opened before a do-not-contact one (a panic "called off" with
    the duress PIN stays open beside the duress alert) become as careful: their next steps,
    desk notices and webhook events must not have anyone call or write to that phone."""
    if not careful:
        return
    stmt = (
        select(Alert)
        .where(
            Alert.defender_id.in_({a.defender_id for a in careful}),
            Alert.id.not_in([a.id for a in careful]),
            Alert.open_key.is_not(None),
            Alert.do_not_contact.is_(False),
        )
        .execution_options(populate_existing=True)
    )
    for alert in (await session.execute(locked(stmt, session))).scalars():
        alert.do_not_contact = True
        alert.version += 1  # the fence: a step decided before this commit is stale
        session.add(actions.event(alert, "do_not_contact", now))


def _alert(
    defender: Defender, kind: AlertKind, policy: Policy, now: datetime, wary: bool = False
) -> Alert:
    key, alert_id = dedup_key(defender.id, kind), uuid.uuid4()
    return Alert(
        id=alert_id,
        org_id=defender.org_id,
        defender_id=defender.id,
        kind=kind,
        priority=int(PRIORITY.get(kind, Priority.P1)),
        state=AlertState.triggered,
        dedup_key=own_key(key, alert_id),
        open_key=key,
        policy_snapshot=policy.to_json(),
        # duress, or raised for a defender hidden after a forced deletion or while such an
        # alert is open (``wary``): the phone may be in other hands
        do_not_contact=wary or kind in DO_NOT_CONTACT or defender.status is DefenderStatus.hidden,
        step=0,
        version=1,
        triggered_at=now,
        created_at=now,
    )


async def lock(session: AsyncSession, alert: Alert) -> Alert:
    """The alert re-read under a lock, its fence bumped and any sweep lease dropped."""
    await write_lock(session)
    stmt = select(Alert).where(Alert.id == alert.id).execution_options(populate_existing=True)
    fresh = (await session.execute(locked(stmt, session))).scalar_one()
    fresh.version += 1
    fresh.lease_owner, fresh.lease_until = None, None
    return fresh


async def defender_of(session: AsyncSession, alert: Alert) -> Defender:
    found = await session.get(Defender, alert.defender_id)
    assert found is not None
    return found


async def by_dedup_key(session: AsyncSession, *, org_id: uuid.UUID, key: str) -> Alert | None:
    """The open alert an external desk refers to (another organisation's key: None)."""
    stmt = select(Alert).where(
        Alert.dedup_key == key, Alert.open_key.is_not(None), Alert.org_id == org_id
    )
    return (await session.execute(stmt)).scalar_one_or_none()
