"""The queue pages the API keeps (api.queue_route.Pages) and the count that says when they are
stale (core.queue_versions, triggers on SQLite): a kept page is never served after a change it
does not show has committed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api import queue_route
from core import desk_alerts, queue_versions
from core.db import create_engine, dispose, transaction
from core.desk_alerts import QUEUE_COLUMNS
from core.migrate import upgrade
from core.models import Alert, AlertKind, Defender
from tests.api.conftest import Desk, make_alert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALERTS = "/api/v1/alerts"


class Counted:
    """desk_alerts.list_alerts, counting its queries; ``then`` runs once after the next one."""

    def __init__(self) -> None:
        self.queries = 0
        self.then: Any = None
        self.real = desk_alerts.list_alerts

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        found = await self.real(*args, **kwargs)
        if self.then is not None:
            then, self.then = self.then, None
            await then()
        return found


@pytest.fixture
async def counted(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Counted]:
    async with transaction(desk.sessions) as s:
        for i in range(4):
            await make_alert(
                s, desk.a, AlertKind.missed_checkin, T0 - timedelta(minutes=i), resolved=True
            )
    counter = Counted()
    monkeypatch.setattr(desk_alerts, "list_alerts", counter)
    yield counter


@asynccontextmanager
async def _token(desk: Desk) -> AsyncIterator[httpx.AsyncClient]:
    async with await desk.client(desk.a, "token") as c:
        assert (await c.get(ALERTS)).status_code == 200  # the token is read and cached
        yield c


def _handles(page: httpx.Response) -> list[str | None]:
    return [item["defender_handle"] for item in page.json()["items"]]


async def test_a_kept_page_is_served_until_a_change_it_shows_commits(
    desk: Desk, counted: Counted, backend: str
) -> None:
    keeps = backend == "sqlite"  # PostgreSQL: every request reads the database

    async def change(statement: Any) -> None:
        async with transaction(desk.sessions) as s:
            await s.execute(statement)

    a = desk.a
    async with _token(desk) as c:
        first = await c.get(ALERTS)
        before = counted.queries
        again = await c.get(ALERTS)
        assert again.content == first.content
        assert counted.queries == before + (0 if keeps else 1)
        oldest = first.json()["items"][-1]["id"]
        steps: Sequence[tuple[str, Any, Any]] = [
            (
                "an alert acknowledged",
                update(Alert)
                .where(Alert.id == a.alert.id)
                .values(state="acknowledged", acknowledged_at=T0),
                lambda p: p.json()["items"][0]["state"] == "acknowledged",
            ),
            (
                "its step moved",
                update(Alert).where(Alert.id == a.alert.id).values(step=3),
                lambda p: p.json()["items"][0]["step"] == 3,
            ),
            (
                "a handle changed",
                update(Defender).where(Defender.id == a.defender.id).values(handle="quiet-otter"),
                lambda p: set(_handles(p)) == {"quiet-otter"},
            ),
            (
                "an alert deleted",
                delete(Alert).where(Alert.id == uuid.UUID(oldest)),
                lambda p: oldest not in [i["id"] for i in p.json()["items"]],
            ),
        ]
        for what, statement, shows in steps:
            await change(statement)
            page = await c.get(ALERTS)
            assert shows(page), what
            before = counted.queries
            assert (await c.get(ALERTS)).content == page.content, what
            assert counted.queries == before + (0 if keeps else 1), what
        # A new alert, written the way the engine writes it.
        async with transaction(desk.sessions) as s:
            await make_alert(s, a, AlertKind.duress, datetime.now(UTC) + timedelta(minutes=5))
        assert (await c.get(ALERTS)).json()["items"][0]["kind"] == "duress"
        # What no page shows (the engine's lease) leaves kept pages as they are.
        before = counted.queries
        await change(
            update(Alert)
            .where(Alert.id == a.alert.id)
            .values(lease_owner="w1", version=Alert.version + 1)
        )
        await c.get(ALERTS)
        assert counted.queries == before + (0 if keeps else 1)
        # Another organisation's change neither shows nor unkeeps anything here.
        async with transaction(desk.sessions) as s:
            await make_alert(s, desk.b, AlertKind.duress, T0)
        await c.get(ALERTS)
        assert counted.queries == before + (0 if keeps else 2)


async def test_a_change_committing_while_the_page_is_read_is_shown_at_the_next_request(
    desk: Desk, counted: Counted
) -> None:
    async def raised() -> None:  # commits after the query read, before the page is kept
        async with transaction(desk.sessions) as s:
            await make_alert(s, desk.a, AlertKind.duress, datetime.now(UTC) + timedelta(hours=1))

    async with _token(desk) as c:
        counted.then = raised
        missed = await c.get("/api/v1/alerts?limit=5")
        assert "duress" not in [i["kind"] for i in missed.json()["items"]]
        shown = await c.get("/api/v1/alerts?limit=5")
        assert shown.json()["items"][0]["kind"] == "duress"


async def test_no_page_is_kept_where_a_trigger_is_missing(
    desk: Desk, counted: Counted, backend: str
) -> None:
    async with _token(desk) as c:
        await c.get(ALERTS)  # kept, on SQLite
        if backend == "sqlite":  # as a migration rebuilding the table would leave it
            async with desk.sessions() as s:
                await s.execute(text("DROP TRIGGER queue_alert_update"))
                await s.commit()
        before = counted.queries
        for _ in range(3):
            await c.get(ALERTS)
        assert counted.queries == before + 3
    assert queue_versions.current(desk.app.state.engine.sync_engine, desk.a.org.id) is None


def test_the_triggers_watch_every_column_a_page_shows_filters_or_orders_by() -> None:
    shown = {c.name for c in QUEUE_COLUMNS if c.table.name == "alerts"}
    used = {"org_id", "state", "kind", "priority", "triggered_at", "id", "defender_id"}
    assert shown | used <= set(queue_versions.ALERT_COLUMNS)
    joined = {c.name for c in QUEUE_COLUMNS if c.table.name == "defenders"}
    assert joined | {"id", "org_id"} <= set(queue_versions.DEFENDER_COLUMNS)
    assert {c.table.name for c in QUEUE_COLUMNS} == {"alerts", "defenders"}


def test_kept_pages_are_bounded_and_keyed_by_count() -> None:
    kept = queue_route.Pages(max_entries=2)
    org = uuid.uuid4()
    kept.put((org, b""), 1, b"one")
    assert kept.get((org, b""), 1) == b"one"
    assert kept.get((org, b""), 2) is None
    kept.put((org, b"limit=3"), 1, b"two")
    kept.get((org, b""), 1)  # served: the other is now the oldest
    kept.put((org, b"kind=panic"), 1, b"three")
    assert kept.get((org, b"limit=3"), 1) is None
    assert kept.get((org, b""), 1) == b"one"


async def test_migrations_create_the_same_triggers_as_the_models(
    db_url: str, backend: str
) -> None:
    engine: AsyncEngine = create_engine(db_url)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            if backend == "sqlite":
                rows = (
                    await conn.execute(
                        text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
                    )
                ).all()
                made = {name: sql for name, sql in rows if name.startswith("queue_")}
                wanted = {
                    name: statement.replace("CREATE TRIGGER IF NOT EXISTS", "CREATE TRIGGER")
                    for name, statement in zip(
                        queue_versions.TRIGGERS, queue_versions.create_statements(), strict=True
                    )
                }
                assert made == wanted
            tables = await conn.run_sync(
                lambda c: __import__("sqlalchemy").inspect(c).get_table_names()
            )
            assert "queue_versions" in tables
    finally:
        await dispose(engine)
