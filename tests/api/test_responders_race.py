"""Two admins demoting or disabling each other at the same moment: the organisation keeps an
active admin. Each request counted the admins (two) before either change was made, so both
passed the "at least one active admin" check, and the organisation was left with none: no one
could manage responders, keys, tokens or webhooks again but the operator.

The overlap is forced as in test_policies_race: a blocker holds the admins' rows (SQLite: the
single writer's lock) while both requests start and wait on a lock (PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
from sqlalchemy import select, text, update

from api.deps import COOKIE, CSRF_HEADER
from core import desk_sessions
from core.audit import _PG_LOCK as AUDIT
from core.claims import dialect, write_lock
from core.db import transaction
from core.models import AuditEntry, DeskSession, Responder, Role
from tests.api.conftest import BASE, CHEAP, PASSWORD, Desk
from tests.api.test_policies_race import Request
from tests.engine.test_lock_order import deadlock, overlap


async def second_admin(desk: Desk) -> Responder:
    async with transaction(desk.sessions) as s:
        r = Responder(
            id=uuid.uuid4(),
            org_id=desk.a.org.id,
            username="admin-two-alpha",
            role=Role.admin,
            password_hash=CHEAP.hash(PASSWORD),
            must_change_password=False,
        )
        r.put(desk.vault, "totp_secret_enc", pyotp.random_base32())
        s.add(r)
    return r


async def client_of(desk: Desk, responder: Responder) -> httpx.AsyncClient:
    c = httpx.AsyncClient(transport=httpx.ASGITransport(app=desk.app), base_url=BASE)
    async with transaction(desk.sessions) as s:
        _row, token, csrf = await desk_sessions.open_session(s, responder, datetime.now(UTC))
    c.cookies.set(COOKIE, token, domain="desk.test")
    c.headers[CSRF_HEADER] = csrf
    return c


async def race(desk: Desk, held: list[uuid.UUID], requests: list[Request]) -> list[httpx.Response]:
    started: list[asyncio.Task[httpx.Response]] = []
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        if dialect(blocker) == "postgresql":
            rows = select(Responder.id).where(Responder.id.in_(held))
            await blocker.execute(rows.order_by(Responder.id).with_for_update())
        for n, r in enumerate(requests, 1):
            started.append(asyncio.create_task(r()))
            await overlap(desk.sessions, n, started)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    failed = [e for e in done if isinstance(e, BaseException)]
    assert not [e for e in failed if deadlock(e)], f"deadlock: {failed}"
    if failed:
        raise failed[0]
    return [d for d in done if isinstance(d, httpx.Response)]


def dialect_of(desk: Desk) -> str:
    return desk.sessions.kw["bind"].dialect.name


async def active_admins(desk: Desk) -> int:
    async with desk.sessions() as s:
        stmt = select(Responder.id).where(
            Responder.org_id == desk.a.org.id,
            Responder.role == Role.admin,
            Responder.active.is_(True),
        )
        return len((await s.execute(stmt)).all())


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(desk: Desk) -> None:
    one, two = desk.a.responders["admin"], await second_admin(desk)
    first, second = await client_of(desk, one), await client_of(desk, two)
    answers = await race(
        desk,
        [one.id, two.id],
        [
            lambda: first.patch(f"/api/v1/responders/{two.id}", json={"role": "responder"}),
            lambda: second.patch(f"/api/v1/responders/{one.id}", json={"active": False}),
        ],
    )
    # The second to go is no admin any more (401, as for any disabled responder's session), or
    # is the last one (409).
    assert sorted(a.status_code for a in answers)[0] == 200, [a.text for a in answers]
    assert sorted(a.status_code for a in answers)[1] in (401, 409), [a.text for a in answers]
    assert await active_admins(desk) == 1


async def test_an_admin_disabled_meanwhile_changes_no_ones_rights(desk: Desk) -> None:
    """One admin disables another, who at that moment makes a responder an admin: the
    disabled admin's request, authenticated just before, waits for the first change and is
    refused; the responder's role stays. (SQLite's busy waits may take the promotion first:
    then it is logged before the disabling, as a change made while still an admin.)"""
    one, two = desk.a.responders["admin"], await second_admin(desk)
    helper = desk.a.responders["responder"]
    first, second = await client_of(desk, one), await client_of(desk, two)
    answers = await race(
        desk,
        [one.id, two.id],
        [
            lambda: first.patch(f"/api/v1/responders/{two.id}", json={"active": False}),
            lambda: second.patch(f"/api/v1/responders/{helper.id}", json={"role": "admin"}),
        ],
    )
    async with desk.sessions() as s:
        stmt = select(AuditEntry.action, AuditEntry.target).where(
            AuditEntry.action.in_(("responder.role", "responder.active"))
        )
        done = (await s.execute(stmt.order_by(AuditEntry.seq))).all()
        role = (await s.get(Responder, helper.id)).role  # type: ignore[union-attr]
    if [a.status_code for a in answers] == [200, 200]:  # the promotion went first
        assert done == [("responder.role", str(helper.id)), ("responder.active", str(two.id))]
        assert dialect_of(desk) == "sqlite"
    else:
        assert [a.status_code for a in answers] == [200, 401], [a.text for a in answers]
        assert done == [("responder.active", str(two.id))]
        assert role is Role.responder


async def stale_sessions(desk: Desk, responder: Responder) -> None:
    """The responder's sessions last seen two minutes ago: their next request writes the time
    it was seen (core.desk_sessions.TOUCH_EVERY), locking the session's row (PostgreSQL)."""
    async with transaction(desk.sessions) as s:
        await s.execute(
            update(DeskSession)
            .where(DeskSession.responder_id == responder.id)
            .values(last_seen_at=datetime.now(UTC) - timedelta(minutes=2))
        )


async def test_disabling_a_responder_whose_request_is_under_way_does_not_deadlock(
    desk: Desk,
) -> None:
    """An admin disables a responder who is viewing an alert at that moment. The admin's
    change wrote its audit line (the trail's lock) before the responder's row and sessions;
    the responder's request wrote its session's last-seen time (its row), then its own audit
    line ("alert.view"): each waited for the other, and PostgreSQL aborted one. The blocker
    holds the audit trail's lock until both requests wait (SQLite: the writer's lock)."""
    assert desk.a.alert is not None
    admin, target = desk.a.responders["admin"], desk.a.responders["responder"]
    first, second = await client_of(desk, admin), await client_of(desk, target)
    await stale_sessions(desk, target)
    started: list[asyncio.Task[httpx.Response]] = []
    requests = [
        lambda: first.patch(f"/api/v1/responders/{target.id}", json={"active": False}),
        lambda: second.get(f"/api/v1/alerts/{desk.a.alert.id}"),  # type: ignore[union-attr]
    ]
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        if dialect(blocker) == "postgresql":
            await blocker.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT})
        for n, r in enumerate(requests, 1):
            started.append(asyncio.create_task(r()))
            await overlap(desk.sessions, n, started)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    assert not [e for e in done if isinstance(e, BaseException)], done
    assert [d.status_code for d in done if isinstance(d, httpx.Response)] == [200, 200]
    async with desk.sessions() as s:
        assert (await s.get(Responder, target.id)).active is False  # type: ignore[union-attr]
