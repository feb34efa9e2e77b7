"""Two desk actions on one alert at the same moment (two responders, or a responder and the
external desk): each passed the "still open?" check before either acted. A resolve that came
second changed nothing (the engine saw the alert resolved under its lock), yet was answered
200 and written in the audit trail as a resolve, with an outcome the alert never had; an
acknowledge that came second was answered 200 (the dashboard: "You acknowledged the alert").

The overlap is forced as in test_policies_race: a blocker holds the alert's row (SQLite: the
single writer's lock) while both requests start and wait on a lock (PostgreSQL)."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from core.claims import dialect, write_lock
from core.db import transaction
from core.models import Alert, AlertState, AuditEntry
from tests.api.conftest import Desk
from tests.api.test_policies_race import Request
from tests.engine.test_lock_order import deadlock, overlap


async def race(desk: Desk, requests: list[Request]) -> list[httpx.Response]:
    assert desk.a.alert is not None
    started: list[asyncio.Task[httpx.Response]] = []
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        if dialect(blocker) == "postgresql":
            row = select(Alert.id).where(Alert.id == desk.a.alert.id)
            await blocker.execute(row.with_for_update())
        for n, r in enumerate(requests, 1):
            started.append(asyncio.create_task(r()))
            await overlap(desk.sessions, n, started)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    failed = [e for e in done if isinstance(e, BaseException)]
    assert not [e for e in failed if deadlock(e)], f"deadlock: {failed}"
    if failed:
        raise failed[0]
    return [d for d in done if isinstance(d, httpx.Response)]


async def logged(desk: Desk, action: str) -> list[dict[str, str]]:
    assert desk.a.alert is not None
    async with desk.sessions() as s:
        stmt = select(AuditEntry.detail).where(
            AuditEntry.action == action, AuditEntry.target == str(desk.a.alert.id)
        )
        return list((await s.execute(stmt.order_by(AuditEntry.seq))).scalars())


async def test_two_resolves_at_once_resolve_once(desk: Desk) -> None:
    """A responder resolves as safe while the external desk resolves as a false alarm: one
    is the resolve, with its outcome; the other answers 409 and is not in the audit trail."""
    assert desk.a.alert is not None
    alert_id = desk.a.alert.id
    me, desk_system = await desk.client(desk.a, "responder"), await desk.client(desk.a, "token")
    answers = await race(
        desk,
        [
            lambda: me.post(f"/api/v1/alerts/{alert_id}/resolve", json={"outcome": "safe"}),
            lambda: desk_system.post(
                f"/api/v1/alerts/{alert_id}/resolve", json={"outcome": "false_alarm"}
            ),
        ],
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 200).json()["outcome"]
    async with desk.sessions() as s:
        assert (await s.get(Alert, alert_id)).outcome == winner  # type: ignore[union-attr]
    assert await logged(desk, "alert.resolve") == [{"outcome": winner}]


async def test_an_acknowledge_after_a_resolve_at_once_is_refused(desk: Desk) -> None:
    """Acknowledge and resolve at once: the alert ends resolved either way; an acknowledge
    that came second says the alert is not open (409), never that it was acknowledged."""
    assert desk.a.alert is not None
    alert_id = desk.a.alert.id
    me, other = await desk.client(desk.a, "responder"), await desk.client(desk.a, "admin")
    answers = await race(
        desk,
        [
            lambda: me.post(f"/api/v1/alerts/{alert_id}/resolve", json={"outcome": "safe"}),
            lambda: other.post(f"/api/v1/alerts/{alert_id}/acknowledge"),
        ],
    )
    resolved, acked = answers
    assert resolved.status_code == 200, resolved.text
    async with desk.sessions() as s:
        assert (await s.get(Alert, alert_id)).state is AlertState.resolved  # type: ignore[union-attr]
    if await logged(desk, "alert.acknowledge"):  # it went first (SQLite may take either)
        assert acked.status_code == 200 and dialect_name(desk) == "sqlite"
    else:
        assert acked.status_code == 409, acked.text


def dialect_name(desk: Desk) -> str:
    return str(desk.sessions.kw["bind"].dialect.name)


async def test_keep_open_after_a_resolve_at_once_is_refused(desk: Desk) -> None:
    """Keep open (proof of life wanted) and resolve at once: one that came second says the
    alert is not open (409); a resolved alert never gets "kept open" in its timeline or the
    audit trail, nor the flag a later reopening would inherit."""
    assert desk.a.alert is not None
    alert_id = desk.a.alert.id
    me, other = await desk.client(desk.a, "responder"), await desk.client(desk.a, "admin")
    answers = await race(
        desk,
        [
            lambda: me.post(f"/api/v1/alerts/{alert_id}/resolve", json={"outcome": "safe"}),
            lambda: other.post(f"/api/v1/alerts/{alert_id}/keep-open"),
        ],
    )
    resolved, kept = answers
    assert resolved.status_code == 200, resolved.text
    async with desk.sessions() as s:
        alert = await s.get(Alert, alert_id)
        assert alert is not None and alert.state is AlertState.resolved
        flagged = alert.keep_open
    if await logged(desk, "alert.keep_open"):  # it went first (SQLite may take either)
        assert kept.status_code == 200 and dialect_name(desk) == "sqlite"
    else:
        assert kept.status_code == 409, kept.text
        assert not flagged
