"""A responder disabled while one of their requests is under way: the request was
authenticated before the change committed, and its write still went through afterwards (an
alert acknowledged, in the audit trail, by someone who may no longer act). It now answers as
for a dead session (401), and writes and audits nothing.

The overlap is forced as in test_alerts_race: a blocker disables the responder (their row and
sessions, as PATCH /responders does) while holding the alert's row (SQLite: the single
writer's lock); the responder's acknowledge starts and waits on a lock (PostgreSQL), or has
been authenticated and found the alert (SQLite, where it waits for the writer's lock only
when it writes: no view shows that wait)."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from core import desk_alerts, desk_sessions
from core.claims import dialect, locked, write_lock
from core.db import transaction
from core.models import Alert, AuditEntry, Responder
from tests.api.conftest import Desk
from tests.api.test_dashboard import browser
from tests.api.test_policies_race import Request
from tests.api.test_responders_race import dialect_of
from tests.engine.test_lock_order import deadlock, overlap


@pytest.mark.parametrize("surface", ["api", "dashboard"])
async def test_a_responder_disabled_meanwhile_acknowledges_nothing(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, surface: str
) -> None:
    """Through the API, or the dashboard's form (PostgreSQL: sent to the login page; SQLite,
    where it is found just before the commit: the API's 401)."""
    assert desk.a.alert is not None
    found, get_alert = asyncio.Event(), desk_alerts.get_alert

    async def finding(*args: Any) -> Alert | None:
        try:
            return await get_alert(*args)
        finally:
            found.set()

    monkeypatch.setattr(desk_alerts, "get_alert", finding)
    alert_id, them = desk.a.alert.id, desk.a.responders["responder"]
    async with AsyncExitStack() as stack:
        if surface == "api":
            me = await desk.client(desk.a, "responder")
            url, data = f"/api/v1/alerts/{alert_id}/acknowledge", None
        else:
            me, csrf = await stack.enter_async_context(browser(desk, desk.a, "responder"))
            url, data = f"/alerts/{alert_id}/acknowledge", {"csrf": csrf}
        answer = await race(desk, them.id, found, lambda: me.post(url, data=data))
    if surface == "dashboard" and dialect_of(desk) == "postgresql":
        assert answer.status_code == 303 and answer.headers["location"] == "/login"
    else:
        assert answer.status_code == 401, answer.text
    async with desk.sessions() as s:
        assert (await s.get(Alert, alert_id)).acknowledged_at is None  # type: ignore[union-attr]
        acks = select(AuditEntry.seq).where(AuditEntry.action == "alert.acknowledge")
        assert (await s.execute(acks)).all() == []


async def race(
    desk: Desk, them: uuid.UUID, found: asyncio.Event, request: Request
) -> httpx.Response:
    """``request`` while a blocker disables ``them`` and holds the alert."""
    assert desk.a.alert is not None
    started: list[asyncio.Task[httpx.Response]] = []
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        if dialect(blocker) == "postgresql":
            row = select(Alert.id).where(Alert.id == desk.a.alert.id)
            await blocker.execute(row.with_for_update())
        stmt = select(Responder).where(Responder.id == them)
        (await blocker.execute(locked(stmt, blocker, key_share=True))).scalar_one().active = False
        await desk_sessions.revoke_sessions(blocker, them, datetime.now(UTC))
        started.append(asyncio.create_task(request()))
        if dialect(blocker) == "postgresql":
            await overlap(desk.sessions, 1, started)
        else:
            await asyncio.wait_for(found.wait(), 10)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    assert not [e for e in done if isinstance(e, BaseException) and deadlock(e)], done
    answer = done[0]
    assert isinstance(answer, httpx.Response), answer
    return answer
