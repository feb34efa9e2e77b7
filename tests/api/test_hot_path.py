"""The alert queue's fast path: the token cache (a security boundary) and the hand-built JSON."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api.alert_schemas import ROW_FIELDS, AlertPage
from api.deps import after_commit, get_db, get_now
from core.api_tokens import TOKEN_CACHE_TTL, TokenCache
from core.auth import Principal, digest
from core.db import transaction
from core.desk_alerts import QUEUE_COLUMNS
from core.models import AlertKind, ApiToken
from tests.api.conftest import Desk, make_alert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_a_token_revoked_by_another_process_stops_within_the_cache_ttl(desk: Desk) -> None:
    clock = [T0]
    desk.app.dependency_overrides[get_now] = lambda: clock[0]
    async with desk.anonymous() as c:
        c.headers["Authorization"] = f"Bearer {desk.a.token}"
        first = await c.get("/api/v1/alerts")
        # Another process (or a direct SQL) revokes it: this process cannot be told.
        async with transaction(desk.sessions) as s:
            await s.execute(
                update(ApiToken)
                .where(ApiToken.token_hash == digest(desk.a.token))
                .values(revoked_at=T0)
            )
        clock[0] = T0 + TOKEN_CACHE_TTL - timedelta(milliseconds=1)
        still = await c.get("/api/v1/alerts")
        clock[0] = T0 + TOKEN_CACHE_TTL
        stopped = await c.get("/api/v1/alerts")
        clock[0] = T0  # and a clock that steps back finds nothing cached either
        back = await c.get("/api/v1/alerts")
    assert (first.status_code, still.status_code) == (200, 200)
    assert (stopped.status_code, back.status_code) == (401, 401)


async def test_revoking_through_the_api_stops_a_cached_token_at_once(desk: Desk) -> None:
    async with desk.anonymous() as c, await desk.client(desk.a, "admin") as admin:
        c.headers["Authorization"] = f"Bearer {desk.a.token}"
        assert (await c.get("/api/v1/alerts")).status_code == 200  # now cached
        listed = (await admin.get("/api/v1/tokens")).json()
        assert (await admin.delete(f"/api/v1/tokens/{listed[0]['id']}")).status_code == 204
        after = await c.get("/api/v1/alerts")
        other = await c.get(f"/api/v1/alerts/{uuid.uuid4()}")
    assert (after.status_code, other.status_code) == (401, 401)


async def test_the_cache_keeps_only_what_was_read_after_the_last_revocation() -> None:
    cache = TokenCache()
    key, principal = digest("amp_x"), Principal(uuid.uuid4(), frozenset({"alerts:read"}), "t")
    generation = cache.generation  # a lookup starts reading the database...
    cache.revoked()  # ...a revocation commits meanwhile...
    cache.put(key, principal, T0, generation)  # ...so what it read is not kept
    assert cache.get(key, T0) is None
    cache.put(key, principal, T0, cache.generation)
    assert cache.get(key, T0 + timedelta(seconds=1)) == principal
    assert cache.get(key, T0 - timedelta(seconds=1)) is None  # the clock stepped back
    cache.put(key, principal, T0, cache.generation)
    assert cache.get(key, T0 + TOKEN_CACHE_TTL) is None
    small = TokenCache(max_entries=2)
    for i in range(3):
        small.put(digest(str(i)), principal, T0, small.generation)
    assert sum(small.get(digest(str(i)), T0) is not None for i in range(3)) <= 2


async def test_an_unknown_token_is_never_cached_and_touches_last_used(desk: Desk) -> None:
    clock = [T0]
    desk.app.dependency_overrides[get_now] = lambda: clock[0]
    async with desk.anonymous() as c:
        c.headers["Authorization"] = "Bearer amp_not-a-token"
        assert (await c.get("/api/v1/alerts")).status_code == 401
        assert desk.app.state.token_cache.get(digest("amp_not-a-token"), T0) is None
        c.headers["Authorization"] = f"Bearer {desk.a.token}"
        for step in range(3):  # past the cache's lifetime, past the minute between touches
            clock[0] = T0 + step * timedelta(seconds=61)
            assert (await c.get("/api/v1/alerts")).status_code == 200
    async with desk.sessions() as s:
        used = (
            await s.execute(
                select(ApiToken.last_used_at).where(ApiToken.token_hash == digest(desk.a.token))
            )
        ).scalar_one()
    assert used == T0 + 2 * timedelta(seconds=61)


async def test_the_queue_page_is_exactly_what_the_model_would_send(desk: Desk) -> None:
    assert [c.key for c in QUEUE_COLUMNS] == list(ROW_FIELDS)
    async with transaction(desk.sessions) as s:
        for i, kind in enumerate([AlertKind.duress, AlertKind.report, AlertKind.missed_checkin]):
            alert = await make_alert(s, desk.a, kind, T0 + timedelta(minutes=i), resolved=i == 2)
            if i == 2:
                alert.resolved_at, alert.outcome = T0 + timedelta(hours=1), "safe"
                alert.assigned_to = desk.a.responders["responder"].id
    bodies = []
    async with await desk.client(desk.a, "token") as c:
        for params in ({"limit": 2}, {"state": "resolved"}, {"priority": 0, "limit": 1}):
            page = await c.get("/api/v1/alerts", params=params)
            bodies.append(page.content)
            if page.json()["next_cursor"]:
                more = {**params, "cursor": page.json()["next_cursor"]}
                bodies.append((await c.get("/api/v1/alerts", params=more)).content)
    assert len(bodies) == 5
    for body in bodies:
        assert body == AlertPage.model_validate_json(body).model_dump_json().encode()
    resolved = AlertPage.model_validate_json(bodies[2]).items
    assert [a.outcome for a in resolved] == ["safe"]
    assert resolved[0].triggered_at == T0 + timedelta(minutes=2)


async def test_after_commit_callbacks_run_once_committed_and_never_on_failure(desk: Desk) -> None:
    request = SimpleNamespace(app=desk.app)
    calls: list[str] = []
    ok = get_db(request)  # type: ignore[arg-type]
    session = await anext(ok)
    after_commit(session, lambda: calls.append("ok"))
    assert calls == []  # not before the commit
    with pytest.raises(StopAsyncIteration):
        await anext(ok)
    failed = get_db(request)  # type: ignore[arg-type]
    session = await anext(failed)
    after_commit(session, lambda: calls.append("failed"))
    with pytest.raises(RuntimeError):
        await failed.athrow(RuntimeError("the route failed"))
    assert calls == ["ok"]


async def test_the_queue_reads_what_is_committed_without_a_connection_of_the_pool(
    desk: Desk, engine: AsyncEngine, backend: str
) -> None:
    """On a SQLite file the queue is read on a connection of its own (core.db.fetch_hot): no
    pool checkout, no transaction. It must still show an alert the moment it is committed,
    never one still being written, and never wait for the writer."""
    checkouts: list[int] = []
    event.listen(engine.sync_engine, "checkout", lambda *_: checkouts.append(1))
    async with await desk.client(desk.a, "token") as c:
        assert (await c.get("/api/v1/alerts")).status_code == 200  # the token is cached now
        checkouts.clear()
        before = [a["id"] for a in (await c.get("/api/v1/alerts")).json()["items"]]
        assert len(checkouts) == (0 if backend == "sqlite" else 1)
        async with desk.sessions() as writer:  # a write under way, its lock held
            pending = await make_alert(writer, desk.a, AlertKind.duress, datetime.now(UTC))
            await writer.flush()
            during = await c.get("/api/v1/alerts")
            assert during.status_code == 200
            assert [a["id"] for a in during.json()["items"]] == before
            await writer.commit()
        after = [a["id"] for a in (await c.get("/api/v1/alerts")).json()["items"]]
    assert after == [str(pending.id), *before]
