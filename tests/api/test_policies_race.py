"""Two desk saves of escalation policies at the same moment: each is a save of its own, in
turn. The last one wins whole (never one's name with the other's ladder), each gets its own
version and audit line, and on PostgreSQL none is aborted by a deadlock (a 500: a save lost).

Each test forces the overlap: a blocker transaction holds the policy rows (SQLite: the single
writer's lock); one save, then the other, is seen waiting on a lock (PostgreSQL), then the
blocker commits. PostgreSQL hands a row to its first waiter, so the first save started goes
first there; SQLite's busy waits take them in either order, and the checks allow for both.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select

from core import alerts
from core.claims import dialect, write_lock
from core.db import transaction
from core.escalation import Policy
from core.models import AlertKind, AuditEntry, Defender, EscalationPolicy
from tests.api.conftest import Desk
from tests.engine.test_lock_order import deadlock, overlap

Request = Callable[[], Awaitable[httpx.Response]]


async def race(desk: Desk, held: list[uuid.UUID], requests: list[Request]) -> list[Any]:
    """Run ``requests`` while a blocker holds the policies ``held``, each started once the
    ones before it wait on a lock (PostgreSQL); their answers, in the order given."""
    started: list[asyncio.Task[httpx.Response]] = []
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        if dialect(blocker) == "postgresql":
            rows = select(EscalationPolicy.id).where(EscalationPolicy.id.in_(held))
            await blocker.execute(rows.order_by(EscalationPolicy.id).with_for_update())
        for n, r in enumerate(requests, 1):
            started.append(asyncio.create_task(r()))
            await overlap(desk.sessions, n, started)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    failed = [e for e in done if isinstance(e, BaseException)]
    assert not [e for e in failed if deadlock(e)], f"deadlock: {failed}"
    if failed:
        raise failed[0]
    return done


async def policy(desk: Desk, name: str, grace_s: int) -> uuid.UUID:
    async with transaction(desk.sessions) as s:
        steps = Policy.from_json({"grace_s": grace_s}).to_json()
        p = EscalationPolicy(org_id=desk.a.org.id, name=name, steps=steps, version=1)
        s.add(p)
        await s.flush()
        return p.id


async def saved(desk: Desk, policy_id: uuid.UUID) -> list[int]:
    """The versions the audit log recorded for saves of the policy, in order."""
    async with desk.sessions() as s:
        stmt = select(AuditEntry.detail).where(
            AuditEntry.action == "policy.save", AuditEntry.target == str(policy_id)
        )
        return [d["version"] for d in (await s.execute(stmt.order_by(AuditEntry.seq))).scalars()]


async def test_two_saves_of_one_policy_at_once_are_saved_in_turn(desk: Desk) -> None:
    """One responder renames the policy and shortens its grace; another, at the same moment,
    keeps its name and lengthens it. Whichever is last is the policy, whole; alerts opened
    afterwards freeze that ladder."""
    assert desk.a.policy is not None and desk.a.defender is not None
    p = desk.a.policy
    bodies = [
        {"name": "renamed", "steps": {"grace_s": 120}},
        {"name": p.name, "steps": {"grace_s": 1800}},
    ]
    async with (
        await desk.client(desk.a, "admin") as admin,
        await desk.client(desk.a, "token") as tok,
    ):
        url = f"/api/v1/policies/{p.id}"
        answers = await race(
            desk,
            [p.id],
            [lambda: admin.put(url, json=bodies[0]), lambda: tok.put(url, json=bodies[1])],
        )
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        got = [a.json() for a in answers]
        now = (await admin.get(url)).json()
    saves = [(b["name"], b["steps"]["grace_s"]) for b in bodies]
    assert (now["name"], now["steps"]["grace_s"]) in saves  # one save, whole
    assert sorted(g["version"] for g in got) == [p.version + 1, p.version + 2]
    assert now == max(got, key=lambda g: g["version"])  # the last one
    assert await saved(desk, p.id) == [p.version + 1, p.version + 2]  # both audited
    async with transaction(desk.sessions) as s:  # an alert opened now freezes that ladder
        d = await s.get(Defender, desk.a.defender.id)
        assert d is not None and d.policy_id is None  # follows the default: this policy
        alert = await alerts.raise_alert(
            s, desk.vault, defender=d, kind=AlertKind.missed_checkin, now=datetime.now(UTC)
        )
        assert Policy.from_json(alert.policy_snapshot).to_json() == now["steps"]


async def test_two_policies_made_the_default_at_once_are_saved_in_turn(desk: Desk) -> None:
    """Two responders each make a different policy the default at the same moment: both saves
    succeed, in turn, and the organisation ends with one default, the last one's."""
    assert desk.a.policy is not None
    old = desk.a.policy
    other = await policy(desk, "other", 300)
    third = await policy(desk, "third", 600)  # held by the blocker: both saves clear it
    async with (
        await desk.client(desk.a, "admin") as admin,
        await desk.client(desk.a, "token") as tok,
    ):
        answers = await race(
            desk,
            [third],
            [
                lambda: admin.put(
                    f"/api/v1/policies/{other}",
                    json={"name": "other", "steps": {"grace_s": 300}, "is_default": True},
                ),
                lambda: tok.put(
                    f"/api/v1/policies/{old.id}",
                    json={"name": old.name, "steps": {"grace_s": 900}, "is_default": True},
                ),
            ],
        )
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        listed = (await admin.get("/api/v1/policies")).json()
    defaults = [p["id"] for p in listed if p["is_default"]]
    assert len(defaults) == 1
    async with desk.sessions() as s:  # the last save's policy
        stmt = select(AuditEntry.target).where(AuditEntry.action == "policy.save")
        assert (await s.execute(stmt.order_by(AuditEntry.seq.desc()))).scalars().first() == (
            defaults[0]
        )


async def test_a_policy_renamed_while_it_is_assigned_waits_for_it(desk: Desk) -> None:
    """One responder renames a policy while another assigns it to a defender: both succeed
    (the rename's key change and the assignment's foreign key check wait for each other)."""
    assert desk.a.defender is not None
    other = await policy(desk, "other", 300)
    d = desk.a.defender.id
    async with (
        await desk.client(desk.a, "admin") as admin,
        await desk.client(desk.a, "token") as tok,
    ):
        answers = await race(
            desk,
            [other],
            [
                lambda: admin.put(
                    f"/api/v1/policies/{other}",
                    json={"name": "renamed", "steps": {"grace_s": 300}},
                ),
                lambda: tok.put(f"/api/v1/defenders/{d}/policy", json={"policy_id": str(other)}),
            ],
        )
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    async with desk.sessions() as s:
        found = await s.get(Defender, d)
        p = await s.get(EscalationPolicy, other)
        assert found is not None and p is not None
        assert (found.policy_id, p.name) == (other, "renamed")


async def test_a_policy_deleted_while_it_is_assigned_is_one_or_the_other(desk: Desk) -> None:
    """One responder deletes a policy nobody uses while another assigns it to a defender:
    either the deletion goes first and the assignment finds no such policy (404), or the
    assignment goes first and the deletion finds the policy in use (409). Never a 500, nor a
    defender silently back on the default (the foreign key's ON DELETE SET NULL)."""
    assert desk.a.defender is not None
    other = await policy(desk, "other", 300)
    d = desk.a.defender.id
    async with (
        await desk.client(desk.a, "admin") as admin,
        await desk.client(desk.a, "token") as tok,
    ):
        gone, given = await race(
            desk,
            [other],
            [
                lambda: admin.delete(f"/api/v1/policies/{other}"),
                lambda: tok.put(f"/api/v1/defenders/{d}/policy", json={"policy_id": str(other)}),
            ],
        )
    async with desk.sessions() as s:
        found = await s.get(Defender, d)
        p = await s.get(EscalationPolicy, other)
        assert found is not None
    if p is None:
        assert (gone.status_code, given.status_code) == (204, 404)
        assert found.policy_id is None
    else:
        assert (gone.status_code, given.status_code) == (409, 200)
        assert found.policy_id == other
