"""An API token revoked while one of its writes is under way: the request was authenticated
before the revocation committed (or by another process's cache, core.api_tokens.TokenCache), and
its write still went through afterwards: an alert acknowledged, a report's review changed,
in the audit trail, by a token the organisation had already revoked. It now answers 401 and
writes and audits nothing, as a responder's request does (test_acting_race).

The overlap is forced as there: a blocker revokes the token (as DELETE /tokens/{id} does,
from another process) while holding the target's row (SQLite: the single writer's lock);
the request starts and waits on a lock (PostgreSQL), or has been authenticated and found
its target (SQLite, where it waits for the writer's lock only when it writes)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from core import api_tokens, desk_alerts, desk_reports
from core.claims import dialect, write_lock
from core.db import transaction
from core.models import Alert, ApiToken, AuditEntry, Report, ReportReview
from tests.api.conftest import Desk
from tests.engine.test_lock_order import deadlock, overlap


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("route", ["alert", "report"])
async def test_a_token_revoked_meanwhile_writes_nothing(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, route: str, cached: bool
) -> None:
    assert desk.a.alert is not None and desk.a.report is not None
    target: Any = Alert if route == "alert" else Report
    target_id = desk.a.alert.id if route == "alert" else desk.a.report.id
    module: Any = desk_alerts if route == "alert" else desk_reports
    name = "get_alert" if route == "alert" else "get_report"
    found, get = asyncio.Event(), getattr(module, name)

    async def finding(*args: Any) -> Any:
        try:
            return await get(*args)
        finally:
            found.set()

    monkeypatch.setattr(module, name, finding)
    async with await desk.client(desk.a, "token") as c:
        assert (await c.get("/api/v1/alerts")).status_code == 200  # used: nothing to touch
        if not cached:  # read at the request's start (else: as another process's cache has it)
            desk.app.state.token_cache = api_tokens.TokenCache()
        found.clear()
        if route == "alert":
            request = c.post(f"/api/v1/alerts/{target_id}/acknowledge")
        else:
            request = c.patch(f"/api/v1/reports/{target_id}/review", json={"act_codes": ["0301"]})
        started = []
        async with transaction(desk.sessions) as blocker:
            await write_lock(blocker)
            if dialect(blocker) == "postgresql":
                await blocker.execute(
                    select(target.id).where(target.id == target_id).with_for_update()
                )
            revoke = update(ApiToken).where(ApiToken.org_id == desk.a.org.id)
            await blocker.execute(revoke.values(revoked_at=datetime.now(UTC)))
            started.append(asyncio.ensure_future(request))
            if dialect(blocker) == "postgresql":
                await overlap(desk.sessions, 1, started)
            else:
                await asyncio.wait_for(found.wait(), 10)
        done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    assert not [e for e in done if isinstance(e, BaseException) and deadlock(e)], done
    answer = done[0]
    assert not isinstance(answer, BaseException), answer
    assert answer.status_code == 401, answer.text
    async with desk.sessions() as s:
        alert = await s.get(Alert, desk.a.alert.id)
        assert alert is not None and alert.acknowledged_at is None
        assert (await s.execute(select(ReportReview))).all() == []
        assert (await s.execute(select(Report.review_enc))).scalars().all() == [None, None]
        actions = select(AuditEntry.action).where(AuditEntry.actor.startswith("token:"))
        assert (await s.execute(actions)).all() == []
