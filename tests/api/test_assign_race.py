"""An alert assigned to a responder at the moment an admin disables them. The assignment read
the responder as active before the disabling committed, and wrote afterwards: the alert was
left assigned to someone who can no longer log in or act on it (the desk believed it taken
care of). The assignee is now read under a lock the disabling waits for, and waits for: an
assignment that comes second answers as for any responder who is not assignable (404).

The overlap is forced: a blocker holds the audit trail's lock (SQLite: the single writer's
lock) while the disabling, then the assignment, start and wait on a lock (PostgreSQL, which
hands the trail's lock to its first waiter: the disabling goes first there)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from core import desk_alerts
from core.audit import _PG_LOCK as AUDIT
from core.claims import dialect, locked, write_lock
from core.db import transaction
from core.models import Alert, AuditEntry, Responder
from tests.api.conftest import Desk
from tests.api.test_policies_race import Request
from tests.api.test_responders_race import client_of
from tests.engine.test_lock_order import overlap


async def audit_race(desk: Desk, requests: list[Request]) -> list[httpx.Response]:
    started: list[asyncio.Task[httpx.Response]] = []
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        if dialect(blocker) == "postgresql":
            await blocker.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT})
        for n, r in enumerate(requests, 1):
            started.append(asyncio.create_task(r()))
            await overlap(desk.sessions, n, started)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    failed = [e for e in done if isinstance(e, BaseException)]
    if failed:
        raise failed[0]
    return [d for d in done if isinstance(d, httpx.Response)]


async def test_an_alert_is_never_assigned_to_a_responder_disabled_meanwhile(desk: Desk) -> None:
    assert desk.a.alert is not None
    alert_id, target = desk.a.alert.id, desk.a.responders["responder"]
    admin = await client_of(desk, desk.a.responders["admin"])
    colleague = await desk.client(desk.a, "token")  # an integration: no responder's lock
    disabling, assigning = await audit_race(
        desk,
        [
            lambda: admin.patch(f"/api/v1/responders/{target.id}", json={"active": False}),
            lambda: colleague.post(
                f"/api/v1/alerts/{alert_id}/assign", json={"responder_id": str(target.id)}
            ),
        ],
    )
    assert disabling.status_code == 200, disabling.text
    async with desk.sessions() as s:
        assigned_to = (await s.get(Alert, alert_id)).assigned_to  # type: ignore[union-attr]
        stmt = select(AuditEntry.action).where(
            AuditEntry.action.in_(("alert.assign", "responder.active"))
        )
        done = list((await s.execute(stmt.order_by(AuditEntry.seq))).scalars())
    if assigning.status_code == 200:  # assigned first (SQLite's busy waits), then disabled
        assert done == ["alert.assign", "responder.active"]
        assert dialect(s) == "sqlite"
    else:
        assert assigning.status_code == 404, assigning.text
        assert done == ["responder.active"]
        assert assigned_to is None


async def test_an_assignment_waits_for_a_disabling_under_way(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, the disabling held open by a blocker (its row locked as PATCH /responders
    locks it; SQLite: the writer's lock) until the assignment waits on a lock (PostgreSQL), or
    is about to (SQLite, where no view shows the wait: the assignment says so), whichever
    order SQLite's busy waits would have taken."""
    assert desk.a.alert is not None
    alert_id, target = desk.a.alert.id, desk.a.responders["responder"]
    waiting = asyncio.Event()
    for name in ("write_lock", "_event"):  # before the lock (now), before the write (before)
        real = getattr(desk_alerts, name)

        async def signal(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            waiting.set()
            return await _real(*args, **kwargs)

        monkeypatch.setattr(desk_alerts, name, signal)
    colleague = await desk.client(desk.a, "admin")  # (a token's first use writes at once)
    started: list[asyncio.Task[httpx.Response]] = []
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        stmt = select(Responder).where(Responder.id == target.id)
        (await blocker.execute(locked(stmt, blocker))).scalar_one().active = False
        await blocker.flush()
        assign = colleague.post(
            f"/api/v1/alerts/{alert_id}/assign", json={"responder_id": str(target.id)}
        )
        started.append(asyncio.create_task(assign))
        if dialect(blocker) == "postgresql":
            await overlap(desk.sessions, 1, started)
        else:
            await asyncio.wait_for(waiting.wait(), 10)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    assigning = done[0]
    assert isinstance(assigning, httpx.Response), assigning
    assert assigning.status_code == 404, assigning.text
    async with desk.sessions() as s:
        assert (await s.get(Alert, alert_id)).assigned_to is None  # type: ignore[union-attr]
