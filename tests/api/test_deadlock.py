"""PostgreSQL aborts a request's transaction to break a deadlock with another (40P01): the
desk gets 503 with Retry-After and a translated sentence, not 500, and nothing the request
wrote stays; sent again, it works. A resolve answered 500 looked like a bug and was easily
left at that, the alert still escalating. Both backends (``tests.deadlocks``)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from api import errors
from core import alert_handling, desk_sessions
from core.i18n import gettext
from core.models import AlertEvent, AlertState, AuditEntry
from tests.api.conftest import BASE, Desk
from tests.api.test_dashboard import browser, state_of
from tests.deadlocks import deadlock


@pytest.fixture
def one_deadlock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next resolve is aborted by a deadlock once it has written the alert resolved."""
    real, left = alert_handling.resolve, [1]

    async def aborted(session: AsyncSession, *args: Any, **kwargs: Any) -> bool:
        done = await real(session, *args, **kwargs)
        if left[0] > 0:
            left[0] -= 1
            await deadlock(session)
        return done

    monkeypatch.setattr(alert_handling, "resolve", aborted)
    return left


async def written(desk: Desk) -> tuple[int, int]:
    """The alert's timeline events and the audit log's entries."""
    async with desk.sessions() as s:
        events = await s.scalar(select(func.count()).select_from(AlertEvent))
        entries = await s.scalar(select(func.count()).select_from(AuditEntry))
    return events or 0, entries or 0


async def test_it_answers_503_and_writes_nothing(desk: Desk, one_deadlock: list[int]) -> None:
    assert desk.a.alert is not None
    path = f"/api/v1/alerts/{desk.a.alert.id}/resolve"
    before = await written(desk)
    async with await desk.client(desk.a, "responder") as c:
        busy = await c.post(path, json={"outcome": "safe"}, headers={"accept-language": "es"})
        assert one_deadlock == [0]
        assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
        assert busy.headers["cache-control"] == "no-store"  # inside the security headers
        spanish = gettext("es")(errors.BUSY)
        assert busy.json() == {"detail": spanish} and spanish != errors.BUSY
        assert await state_of(desk, desk.a) is AlertState.triggered
        assert await written(desk) == before
        again = await c.post(path, json={"outcome": "safe"})
    assert (again.status_code, again.json()["state"]) == (200, "resolved")
    assert await state_of(desk, desk.a) is AlertState.resolved


async def test_the_dashboards_resolve_answers_503_too(desk: Desk, one_deadlock: list[int]) -> None:
    assert desk.a.alert is not None
    url = f"/alerts/{desk.a.alert.id}/resolve"
    async with browser(desk, desk.a, "responder") as (c, csrf):
        busy = await c.post(url, data={"csrf": csrf, "outcome": "safe"})
        assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
        assert busy.headers["content-type"].startswith("text/html")  # a page, not JSON
        assert "try again in a moment" in busy.text
        assert await state_of(desk, desk.a) is AlertState.triggered
        again = await c.post(url, data={"csrf": csrf, "outcome": "safe"})
    assert again.headers["location"] == "/?notice=resolved"
    assert await state_of(desk, desk.a) is AlertState.resolved


async def test_any_other_database_error_is_still_a_500(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> bool:
        raise DBAPIError("UPDATE alerts", None, Exception("disk full"))

    monkeypatch.setattr(alert_handling, "resolve", broken)
    assert desk.a.alert is not None
    path = f"/api/v1/alerts/{desk.a.alert.id}/resolve"
    quiet = httpx.ASGITransport(app=desk.app, raise_app_exceptions=False)  # answer, not raise
    token = {"authorization": f"Bearer {desk.a.token}"}
    async with httpx.AsyncClient(transport=quiet, base_url=BASE, headers=token) as c:
        answer = await c.post(path, json={"outcome": "safe"})
    assert answer.status_code == 500 and "retry-after" not in answer.headers
    assert answer.json() == {"detail": errors.INTERNAL}


async def test_a_deadlock_as_the_request_commits_is_a_503_too(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the handler returned: ``api.deps.get_db``'s last statements before the commit."""
    real, left = desk_sessions.still_held, [1]

    async def aborted(session: AsyncSession) -> bool:
        if left[0] > 0:  # the resolve, written and flushed
            left[0] -= 1
            await deadlock(session)
        return await real(session)

    monkeypatch.setattr(desk_sessions, "still_held", aborted)
    assert desk.a.alert is not None
    path = f"/api/v1/alerts/{desk.a.alert.id}/resolve"
    async with await desk.client(desk.a, "responder") as c:
        busy = await c.post(path, json={"outcome": "safe"})
    assert left == [0] and (busy.status_code, busy.headers["retry-after"]) == (503, "1")
    assert await state_of(desk, desk.a) is AlertState.triggered
