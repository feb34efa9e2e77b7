"""The alert queue's short way (api.queue_route): the same bytes as the declared route, and
every request it cannot answer exactly as declared handed back to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from api import queue_route
from api.deps import get_db
from core.db import transaction
from core.desk_alerts import Cursor
from core.models import AlertKind, AlertState
from tests.api.conftest import Desk, make_alert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
QUERIES = [
    "",
    "limit=3",
    "state=triggered",
    "state=resolved&kind=missed_checkin&limit=2",
    "kind=panic&priority=0",
    "priority=1&limit=200",
]
# Each is answered by the declared route: odd forms, wrong values, repeats, unknown names.
DECLARED = [
    "limit=0",
    "limit=201",
    "limit=03",
    "limit=%203",
    "limit=x",
    "priority=4",
    "priority=-0",
    "state=Triggered",
    "state=open",
    "kind=panic&kind=duress",
    "cursor=not-a-cursor",
    "cursor=" + "A" * 201,
    "sort=asc",
    "limit",
    "%ff=1",
]


@pytest.fixture
async def queue(desk: Desk) -> AsyncIterator[Desk]:
    async with transaction(desk.sessions) as s:
        for i in range(6):
            kind = [AlertKind.missed_checkin, AlertKind.panic][i % 2]
            await make_alert(s, desk.a, kind, T0 - timedelta(minutes=i), resolved=True)
    yield desk


def test_filters_takes_only_canonical_query_strings() -> None:
    cursor = Cursor(T0, __import__("uuid").uuid4())
    assert queue_route.filters(b"") == {}
    assert queue_route.filters(b"state=acknowledged&kind=duress&priority=0&limit=7") == {
        "state": AlertState.acknowledged,
        "kind": AlertKind.duress,
        "priority": 0,
        "limit": 7,
    }
    assert queue_route.filters(f"cursor={cursor.encode()}".encode()) == {"after": cursor}
    for query in DECLARED:
        assert queue_route.filters(query.encode()) is None, query


async def _declared(desk: Desk, query: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    async def never(_request: Any) -> None:
        return None

    with monkeypatch.context() as m:
        m.setattr(queue_route, "short_way", never)
        async with await desk.client(desk.a, "token") as c:
            return await c.get(f"/api/v1/alerts?{query}")


def _counting(desk: Desk) -> list[int]:
    """Counts the requests whose dependencies were solved (the declared route's)."""
    solved = [0]

    async def counted() -> AsyncIterator[AsyncSession]:
        solved[0] += 1
        async with desk.sessions() as session:
            yield session
            if session.in_transaction():
                await session.commit()

    desk.app.dependency_overrides[get_db] = counted
    return solved


async def test_a_cached_tokens_plain_request_gets_the_declared_routes_bytes(
    queue: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {q: await _declared(queue, q, monkeypatch) for q in QUERIES}
    queue.app.state.token_cache.revoked()  # forgotten: the next request reads it again
    solved = _counting(queue)
    async with await queue.client(queue.a, "token") as c:
        await c.get("/api/v1/alerts")  # the token's first request reads it: declared
        assert solved == [1]
        short = 0
        for query in QUERIES:
            before = solved[0]
            got = await c.get(f"/api/v1/alerts?{query}")
            short += solved[0] == before
            want = expected[query]
            assert (got.status_code, got.content) == (want.status_code, want.content), query
            assert got.headers["content-type"] == want.headers["content-type"]
            assert got.headers["cache-control"] == want.headers["cache-control"]
            # and the next page, by the cursor the short way handed out
            following = got.json()["next_cursor"]
            if following is not None:
                before = solved[0]
                page = await c.get("/api/v1/alerts", params={"cursor": following})
                short += solved[0] == before
                want_page = await _declared(queue, f"cursor={following}", monkeypatch)
                assert page.content == want_page.content
        assert short == len(QUERIES) + 2, "the short way solved no dependency"
    pages = [expected[q].json()["items"] for q in QUERIES]
    assert [len(p) for p in pages] == [7, 3, 1, 2, 4, 3]


async def test_what_the_short_way_cannot_answer_goes_the_declared_way(
    queue: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {q: await _declared(queue, q, monkeypatch) for q in DECLARED}
    assert {r.status_code for r in expected.values()} == {200, 422}
    queue.app.state.token_cache.revoked()
    solved = _counting(queue)
    async with await queue.client(queue.a, "token") as c:
        await c.get("/api/v1/alerts")
        for query in DECLARED:
            got = await c.get(f"/api/v1/alerts?{query}")
            assert (got.status_code, got.content) == (
                expected[query].status_code,
                expected[query].content,
            ), query
    assert solved == [1 + len(DECLARED)]


async def test_sessions_tokens_without_the_scope_and_other_orgs_go_the_declared_way(
    queue: Desk,
) -> None:
    solved = _counting(queue)
    async with await queue.client(queue.a, "observer") as browser:
        assert (await browser.get("/api/v1/alerts")).status_code == 200
        assert (await browser.get("/api/v1/alerts")).status_code == 200
    assert solved == [2]  # a session is never taken the short way
    async with await queue.client(queue.b, "token") as other:
        await other.get("/api/v1/alerts")
        page = (await other.get("/api/v1/alerts")).json()["items"]
    assert [i["defender_handle"] for i in page] == ["calm-heron-bravo"]  # its own org only
    async with transaction(queue.sessions) as s:
        from sqlalchemy import update

        from core.auth import digest
        from core.models import ApiToken

        await s.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == digest(queue.a.token))
            .values(scopes=["reports:read"])
        )
    async with await queue.client(queue.a, "token") as c:
        assert (await c.get("/api/v1/alerts")).status_code == 403  # read, then refused
    assert solved == [4]
