"""Several API processes on one database (DESIGN.md): each test runs two apps, each with its
own memory (token cache, limits), as two ``amparo api`` processes would."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from api.app import create_app
from core.config import Settings
from core.models import Responder
from core.throttle import Limits, Throttle, ThrottleHit
from tests.api.conftest import BASE, Desk
from tests.api.test_auth import creds, login

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def second_process(desk: Desk, limits: Limits) -> FastAPI:
    app = create_app(Settings(), desk.app.state.engine, desk.vault)
    app.state.limits = limits
    return app


def client(app: FastAPI, ip: str = "192.0.2.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 4000))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


async def test_failed_logins_count_in_every_process(desk: Desk) -> None:
    # The account's backstop, hit from two addresses through two processes.
    desk.app.state.limits = Limits(login_account=Throttle(3, 900))
    other = second_process(desk, Limits(login_account=Throttle(3, 900)))
    wrong = creds(desk) | {"password": "wrong"}
    async with client(desk.app) as one, client(other, "192.0.2.2") as two:
        codes = [(await login(c, wrong)).status_code for c in (one, two, one)]
        blocked = [await login(c, creds(desk)) for c in (one, two)]
        spared = await login(two, creds(desk, "admin"))
    assert codes == [401, 401, 401]
    assert [b.status_code for b in blocked] == [429, 429]
    assert all(int(b.headers["retry-after"]) > 0 for b in blocked)
    assert spared.status_code == 200


async def test_exports_count_in_every_process(desk: Desk) -> None:
    desk.app.state.limits = Limits(export=Throttle(2, 3600))
    other = second_process(desk, Limits(export=Throttle(2, 3600)))
    session = await desk.client(desk.a, "responder")
    async with session as one, client(other) as two:
        two.cookies, two.headers = one.cookies, one.headers
        codes = [(await c.get("/api/v1/reports/export")).status_code for c in (one, two, one, two)]
    assert codes == [200, 200, 429, 429]


async def test_a_responder_disabled_in_one_process_is_out_of_every_process_at_once(
    desk: Desk,
) -> None:
    other = second_process(desk, Limits())
    admin = await desk.client(desk.a, "admin")
    responder = await desk.client(desk.a, "responder")
    target = desk.a.responders["responder"].id
    async with admin, responder, client(other) as elsewhere:
        elsewhere.cookies, elsewhere.headers = responder.cookies, responder.headers
        before = (await elsewhere.get("/api/v1/alerts")).status_code
        patched = await admin.patch(f"/api/v1/responders/{target}", json={"active": False})
        after = [(await c.get("/api/v1/alerts")).status_code for c in (elsewhere, responder)]
    assert (before, patched.status_code, after) == (200, 200, [401, 401])


async def test_the_window_slides_and_says_when_to_retry(desk: Desk) -> None:
    throttle, sessions = Throttle(3, 60, "login_account"), desk.sessions
    for seconds in (0, 10, 20):
        assert await throttle.hit(sessions, "user:ana", T0 + timedelta(seconds=seconds))
    now = T0 + timedelta(seconds=30)
    assert await throttle.blocked(sessions, "user:ana", now)
    assert not await throttle.hit(sessions, "user:ana", now)
    assert await throttle.retry_after(sessions, "user:ana", now) == 31
    assert not await throttle.blocked(sessions, "user:bea", now)
    later = T0 + timedelta(seconds=60)  # the first hit has left the window
    assert not await throttle.blocked(sessions, "user:ana", later)
    assert await throttle.retry_after(sessions, "user:ana", later) == 0
    assert await throttle.hit(sessions, "user:ana", later)
    assert await throttle.blocked(sessions, "user:ana", later)


async def test_concurrent_hits_never_pass_the_limit(desk: Desk) -> None:
    # Each hit is its own transaction on its own connection, as from several processes.
    throttles = [Throttle(3, 900, "export") for _ in range(8)]
    passed = await asyncio.gather(*(t.hit(desk.sessions, "responder:x", T0) for t in throttles))
    assert sum(passed) == 3
    async with desk.sessions() as s:
        rows = (await s.execute(select(ThrottleHit))).scalars().all()
    assert len(rows) == 3


async def test_it_keeps_only_digests_and_no_older_hit_than_the_window(desk: Desk) -> None:
    username = desk.a.responders["responder"].username
    account, other = Throttle(5, 60, "login_account"), Throttle(5, 60, "login_address")
    await account.hit(desk.sessions, f"user:{username}", T0)
    await other.hit(desk.sessions, "ip:192.0.2.7", T0)
    await account.hit(desk.sessions, "user:someone", T0 + timedelta(seconds=61))
    async with desk.sessions() as s:
        rows = (await s.execute(select(ThrottleHit))).scalars().all()
        names = (await s.execute(select(Responder.username))).scalars().all()
    # the account's expired hit went with the next hit of its scope; the address's stays
    assert sorted((r.scope, r.at) for r in rows) == [
        ("login_account", T0 + timedelta(seconds=61)),
        ("login_address", T0),
    ]
    stored = b"".join(r.key_hash + r.scope.encode() for r in rows)
    assert username in names and username.encode() not in stored
    assert b"192.0.2.7" not in stored and all(len(r.key_hash) == 32 for r in rows)
    await account.reset(desk.sessions, "user:someone")
    assert await account.retry_after(desk.sessions, "user:someone", T0) == 0


async def test_the_apps_throttles_key_their_digests_with_the_vault(desk: Desk) -> None:
    """A plain SHA-256 of an IPv4 address is undone by trying all 2^32 of them: an app's own
    throttles store the vault's keyed blind index instead."""
    app = create_app(Settings(), desk.app.state.engine, desk.vault)  # its own limits
    async with client(app, "192.0.2.9") as c:
        answer = await login(c, creds(desk) | {"password": "wrong"})
    assert answer.status_code == 401
    async with desk.sessions() as s:
        rows = (await s.execute(select(ThrottleHit))).scalars().all()
    username = desk.a.responders["responder"].username
    keys = {
        "login_account": f"user:{username}",
        "login_address": "ip:192.0.2.9",
        "login_account_address": f"ip:192.0.2.9\0user:{username}",
    }
    assert sorted(r.scope for r in rows) == sorted(keys)
    for row in rows:
        assert row.key_hash != hashlib.sha256(f"{row.scope}\0{keys[row.scope]}".encode()).digest()
        assert row.key_hash == desk.vault.blind_index(f"throttle:{row.scope}", keys[row.scope])
