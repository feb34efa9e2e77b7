"""Password + TOTP logins, sessions, CSRF, throttling and API tokens (SECURITY.md R19-R21)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api.deps import COOKIE, CSRF_HEADER
from core import auth
from core.db import transaction
from core.models import ApiToken, AuditEntry, DeskSession, Responder
from core.throttle import Limits, Throttle
from tests.api.conftest import BASE, PASSWORD, Desk, code

EARLIER = timedelta(seconds=-30)  # a code of the previous step, still inside the window


def creds(desk: Desk, role: str = "responder", at: datetime | None = None) -> dict[str, str]:
    r = desk.a.responders[role]
    return {"username": r.username, "password": PASSWORD, "totp": code(desk.a.totp[role], at)}


async def login(c: httpx.AsyncClient, body: dict[str, str]) -> httpx.Response:
    answer = await c.post("/api/v1/auth/login", json=body)
    if answer.status_code == 200:
        c.headers[CSRF_HEADER] = answer.json()["csrf_token"]
    return answer


async def test_it_logs_in_with_password_and_totp(desk: Desk) -> None:
    async with desk.anonymous() as c:
        answer = await login(c, creds(desk))
        assert answer.status_code == 200
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        for attribute in ("HttpOnly", "Path=/", "SameSite=strict", "Secure"):
            assert attribute.lower() in cookie.lower()
        assert "domain" not in cookie.lower()  # __Host- cookies carry no Domain
        me = await c.get("/api/v1/auth/me")
    assert me.json()["username"] == desk.a.responders["responder"].username
    async with desk.sessions() as s:
        actions = (await s.execute(select(AuditEntry.action))).scalars().all()
        stored = (await s.execute(select(DeskSession.token_hash))).scalars().all()
    assert "auth.login" in actions
    token = c.cookies[COOKIE]
    assert all(token.encode() not in h for h in stored) and len(token) >= 43  # >= 256 bits


async def test_it_refuses_a_totp_code_used_before(desk: Desk) -> None:
    body = creds(desk)
    async with desk.anonymous() as c:
        assert (await login(c, body)).status_code == 200
        assert (await c.post("/api/v1/auth/logout")).status_code == 204
    async with desk.anonymous() as c:
        again = await login(c, body)
        older = await login(c, creds(desk, at=datetime.now(UTC) + EARLIER))
    assert (again.status_code, older.status_code) == (401, 401)


async def test_it_refuses_wrong_passwords_and_codes_alike(desk: Desk) -> None:
    wrong_password = creds(desk) | {"password": "nope"}
    wrong_code = creds(desk) | {"totp": "000000" if creds(desk)["totp"] != "000000" else "111111"}
    unknown = creds(desk) | {"username": "nobody"}
    async with desk.anonymous() as c:
        answers = [await login(c, body) for body in (wrong_password, wrong_code, unknown)]
    assert {a.status_code for a in answers} == {401}
    assert len({a.json()["detail"] for a in answers}) == 1  # nothing tells which part was wrong


async def test_a_known_and_an_unknown_username_take_the_same_steps(
    desk: Desk, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a username exists must not show in how long a refusal takes (abuse case 19): a
    wrong password for a known account and any password for an unknown name run the same
    statements (throttle hits, the lookup, one audit entry) and one Argon2id check each.
    Counted, never timed; and the unknown name is written nowhere."""
    statements: list[str] = []
    checks: list[str] = []
    verify = auth.verify_password

    def seen(*args: Any) -> None:
        statements.append(args[2])  # (conn, cursor, statement, parameters, context, many)

    def counted(hashed: str, password: str) -> bool:
        checks.append(password)
        return verify(hashed, password)

    async def attempt(c: httpx.AsyncClient, username: str) -> tuple[list[str], int]:
        statements.clear()
        checks.clear()
        answer = await login(c, {"username": username, "password": "wrong", "totp": "123456"})
        assert answer.status_code == 401
        return list(statements), len(checks)

    monkeypatch.setattr(auth, "verify_password", counted)
    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with desk.anonymous() as c:
            await attempt(c, desk.a.responders["observer"].username)  # this address's first hit
            known = await attempt(c, desk.a.responders["responder"].username)
            unknown = await attempt(c, "no-such-responder")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    assert known == unknown and known[1] == 1
    assert sum("INSERT INTO audit_entries" in s for s in known[0]) == 1
    async with desk.sessions() as s:
        log = (await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars().all()
    *_, on_known, on_unknown = [e for e in log if e.action == "auth.login_failed"]
    assert (on_known.org_id, on_known.target) == (
        desk.a.org.id,
        str(desk.a.responders["responder"].id),
    )
    assert (on_unknown.org_id, on_unknown.target, on_unknown.actor) == (None, None, "anonymous")
    assert on_unknown.detail == {"reason": "unknown"}
    assert not any("no-such-responder" in f"{e.actor}{e.target}{e.detail}" for e in log)


async def test_it_never_keeps_a_session_the_client_brought(desk: Desk) -> None:
    async with await desk.client(desk.a, "responder") as planted:
        fixed = planted.cookies[COOKIE]
        async with desk.anonymous() as c:
            c.cookies.set(COOKIE, fixed, domain="desk.test")
            assert (await login(c, creds(desk))).status_code == 200
            assert c.cookies[COOKIE] != fixed
            assert (await c.get("/api/v1/auth/me")).status_code == 200
        assert (await planted.get("/api/v1/auth/me")).status_code == 401


async def test_it_refuses_a_session_after_logout(desk: Desk) -> None:
    async with await desk.client(desk.a, "admin") as c:
        token = c.cookies[COOKIE]
        assert (await c.post("/api/v1/auth/logout")).status_code == 204
    async with desk.anonymous() as c:
        c.cookies.set(COOKIE, token, domain="desk.test")
        assert (await c.get("/api/v1/alerts")).status_code == 401


async def test_it_ends_idle_and_old_sessions(desk: Desk) -> None:
    idle, old = await desk.client(desk.a, "admin"), await desk.client(desk.a, "responder")
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        await s.execute(
            update(DeskSession)
            .where(DeskSession.responder_id == desk.a.responders["admin"].id)
            .values(last_seen_at=now - timedelta(minutes=31))
        )
        await s.execute(
            update(DeskSession)
            .where(DeskSession.responder_id == desk.a.responders["responder"].id)
            .values(expires_at=now - timedelta(seconds=1))
        )
    async with idle, old:
        assert (await idle.get("/api/v1/alerts")).status_code == 401
        assert (await old.get("/api/v1/alerts")).status_code == 401


async def test_it_ends_every_session_on_a_password_change(desk: Desk) -> None:
    other = await desk.client(desk.a, "responder")
    async with desk.anonymous() as c, other:
        assert (await login(c, creds(desk))).status_code == 200
        before = c.cookies[COOKIE]
        changed = await c.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": "a new and long password"},
        )
        assert changed.status_code == 200
        c.headers[CSRF_HEADER] = changed.json()["csrf_token"]
        assert c.cookies[COOKIE] != before
        assert (await c.get("/api/v1/alerts")).status_code == 200
        assert (await other.get("/api/v1/alerts")).status_code == 401
        c.cookies.set(COOKIE, before, domain="desk.test")
        assert (await c.get("/api/v1/alerts")).status_code == 401


async def test_guessing_the_current_password_is_throttled(desk: Desk) -> None:
    desk.app.state.limits = Limits(login_account_address=Throttle(3, 900))
    path, good = "/api/v1/auth/password", "a new and long password"
    async with desk.anonymous() as c:
        assert (await login(c, creds(desk))).status_code == 200
        for _ in range(3):
            wrong = await c.post(path, json={"current_password": "guess", "new_password": good})
            assert wrong.status_code == 400
        right = await c.post(path, json={"current_password": PASSWORD, "new_password": good})
        assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
        assert (await c.get("/api/v1/alerts")).status_code == 200  # the session stays
        # and so does this address's login to the account (from another address: test_lockout)
        assert (await login(c, creds(desk))).status_code == 429
    responder = desk.a.responders["responder"]
    async with transaction(desk.sessions) as session:  # the password did not change
        stored = await session.get(Responder, responder.id)
        assert stored is not None and stored.password_hash == responder.password_hash


async def test_it_ends_every_session_when_an_account_is_disabled(desk: Desk) -> None:
    victim = desk.a.responders["responder"]
    async with (
        await desk.client(desk.a, "admin") as admin,
        await desk.client(desk.a, "responder") as c,
    ):
        assert (await c.get("/api/v1/alerts")).status_code == 200
        patch = await admin.patch(f"/api/v1/responders/{victim.id}", json={"active": False})
        assert patch.status_code == 200
        assert (await c.get("/api/v1/alerts")).status_code == 401
    async with desk.anonymous() as c:  # nor can it log in again
        assert (await login(c, creds(desk))).status_code == 401


async def test_it_requires_a_new_password_before_anything_else(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        r = desk.a.responders["responder"]
        await s.execute(
            update(Responder).where(Responder.id == r.id).values(must_change_password=True)
        )
    async with desk.anonymous() as c:
        assert (await login(c, creds(desk))).status_code == 200
        assert (await c.get("/api/v1/alerts")).status_code == 403
        changed = await c.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": "a new and long password"},
        )
        c.headers[CSRF_HEADER] = changed.json()["csrf_token"]
        assert (await c.get("/api/v1/alerts")).status_code == 200


async def test_it_requires_the_csrf_header_with_a_cookie(desk: Desk) -> None:
    assert desk.a.alert is not None
    path = f"/api/v1/alerts/{desk.a.alert.id}/assign"
    async with await desk.client(desk.a, "admin") as c:
        good = c.headers.pop(CSRF_HEADER)
        missing = await c.post(path, json={"responder_id": None})
        wrong = await c.post(path, json={"responder_id": None}, headers={CSRF_HEADER: "x" * 43})
        read = await c.get("/api/v1/alerts")
        ok = await c.post(path, json={"responder_id": None}, headers={CSRF_HEADER: good})
    assert [a.status_code for a in (missing, wrong, read, ok)] == [403, 403, 200, 200]


async def test_it_throttles_one_account_and_spares_the_others(desk: Desk) -> None:
    desk.app.state.limits = Limits(login_account_address=Throttle(3, 900))
    async with desk.anonymous() as c:
        for _ in range(3):
            assert (await login(c, creds(desk) | {"password": "wrong"})).status_code == 401
        blocked = await login(c, creds(desk))
        other = await login(c, creds(desk, "admin"))
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert other.status_code == 200


async def test_it_throttles_one_address_and_spares_the_others(desk: Desk) -> None:
    desk.app.state.limits = Limits(login_address=Throttle(2, 900))

    def client(ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=desk.app, client=(ip, 4000))
        return httpx.AsyncClient(transport=transport, base_url=BASE)

    async with client("192.0.2.1") as attacker, client("192.0.2.2") as colleague:
        for role in ("observer", "admin"):
            body = creds(desk, role) | {"password": "wrong"}
            assert (await login(attacker, body)).status_code == 401
        spoofed = await attacker.post(
            "/api/v1/auth/login",
            json=creds(desk),
            headers={"X-Forwarded-For": "192.0.2.9"},
        )
        assert spoofed.status_code == 429
        assert (await login(colleague, creds(desk))).status_code == 200


async def test_it_answers_in_the_callers_language(desk: Desk) -> None:
    async with desk.anonymous() as c:
        es = await c.get("/api/v1/alerts", headers={"Accept-Language": "es-MX,es;q=0.9"})
        fr = await c.get("/api/v1/alerts", headers={"Accept-Language": "de, fr;q=0.5"})
        en = await c.get("/api/v1/alerts")
    assert en.json()["detail"] == "log in first"
    assert es.json()["detail"] != en.json()["detail"] != fr.json()["detail"]


async def test_it_keeps_only_token_hashes_and_honours_revocation(desk: Desk) -> None:
    assert desk.a.alert is not None
    alert_id = desk.a.alert.id
    async with await desk.client(desk.a, "admin") as admin:
        made = await admin.post(
            "/api/v1/tokens", json={"name": "hotline", "scopes": ["alerts:read"]}
        )
        too_much = await admin.post("/api/v1/tokens", json={"name": "x", "scopes": ["org:admin"]})
        token, token_id = made.json()["token"], made.json()["id"]
        async with desk.anonymous() as c:
            c.headers["Authorization"] = f"Bearer {token}"
            assert (await c.get("/api/v1/alerts")).status_code == 200
            ack = await c.post(f"/api/v1/alerts/{alert_id}/acknowledge")
            assert ack.status_code == 403
            assert (await admin.delete(f"/api/v1/tokens/{token_id}")).status_code == 204
            assert (await c.get("/api/v1/alerts")).status_code == 401
    assert too_much.status_code == 400
    async with desk.sessions() as s:
        hashes = (await s.execute(select(ApiToken.token_hash))).scalars().all()
    assert all(token.encode() not in h for h in hashes)


async def test_a_token_refused_for_a_scope_is_told_which(desk: Desk) -> None:
    """Found walking the API as an integrator: a token without ``alerts:write`` acknowledging
    by dedup key got 403 "your role does not allow this" (a token has no role), and a token
    asked for with a scope a token cannot hold got 400 naming none: the integrator could not
    tell what to ask the desk's admin for. The answers name the scope missing, and the
    scopes a token may hold."""
    assert desk.a.alert is not None
    async with await desk.client(desk.a, "admin") as admin:
        made = await admin.post(
            "/api/v1/tokens", json={"name": "hotline", "scopes": ["alerts:read"]}
        )
        refused = await admin.post("/api/v1/tokens", json={"name": "x", "scopes": ["org:admin"]})
    async with desk.anonymous() as c:
        c.headers["Authorization"] = f"Bearer {made.json()['token']}"
        ack = await c.post(f"/api/v1/alerts/by-dedup/{desk.a.alert.dedup_key}/acknowledge")
        queue = await c.get("/api/v1/defenders")
    assert ack.status_code == 403 and ack.json()["missing_scope"] == "alerts:write"
    assert queue.status_code == 403 and queue.json()["missing_scope"] == "defenders:read"
    assert refused.status_code == 400
    allowed = refused.json()["allowed"]
    assert "alerts:write" in allowed and "org:admin" not in allowed
    assert sorted(allowed) == sorted(auth.TOKEN_SCOPES)
