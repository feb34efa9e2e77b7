"""Found in review of the dashboard (both backends): another organisation's invite, logging out
from a stale page, a NUL in a login or a cursor, an older panic in a storm of alerts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from api.dashboard import CSRF_COOKIE, OPEN_PAGE
from api.deps import COOKIE
from core.db import transaction
from core.models import AlertKind, Defender, InviteCode
from tests.api.conftest import BASE, PASSWORD, Desk, code, make_alert
from tests.api.test_dashboard import NONCE, browser, log_in


async def test_revoking_another_organisations_invite_answers_404(desk: Desk) -> None:
    assert desk.b.invite is not None
    async with browser(desk, desk.a, "responder") as (c, csrf):
        foreign = await c.post(f"/invites/{desk.b.invite.id}/revoke", data={"csrf": csrf})
        unknown = await c.post(f"/invites/{uuid.uuid4()}/revoke", data={"csrf": csrf})
    async with desk.sessions() as s:
        row = await s.get(InviteCode, desk.b.invite.id)
        assert row is not None and row.revoked_at is None
    assert (foreign.status_code, unknown.status_code) == (404, 404)


async def test_logging_out_from_a_stale_page_still_ends_the_session(desk: Desk) -> None:
    async with browser(desk, desk.a, "responder") as (c, stale_csrf):
        later = datetime.now(UTC) + timedelta(seconds=30)  # a code not used yet
        again = await log_in(c, desk.a, "responder", totp=code(desk.a.totp["responder"], later))
        assert again.status_code == 303  # logged in again in another tab
        live = {COOKIE: c.cookies[COOKIE], CSRF_COOKIE: c.cookies[CSRF_COOKIE]}
        answer = await c.post("/logout", data={"csrf": stale_csrf})  # the first tab's button
        assert answer.headers["location"] == "/login"
    async with desk.anonymous() as replay:
        for name, value in live.items():
            replay.cookies.set(name, value, domain="desk.test")
        after = await replay.get("/")
    assert after.status_code == 303 and after.headers["location"] == "/login"


async def test_a_nul_in_a_username_or_a_cursor_is_refused_not_a_crash(desk: Desk) -> None:
    transport = httpx.ASGITransport(app=desk.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        form = await c.get("/login")
        nonce = NONCE.search(form.text)
        assert nonce is not None
        fields = {"username": "admin\x00", "password": PASSWORD, "totp": "123456"}
        page = await c.post("/login", data=fields | {"nonce": nonce.group(1)})
        api = await c.post("/api/v1/auth/login", json=fields)
    assert (page.status_code, api.status_code) == (400, 400)  # tests/api/test_nul.py
    async with await desk.client(desk.a, "observer") as c:
        listed = await c.get("/api/v1/defenders", params={"cursor": "a\x00"})
    assert listed.status_code == 400
    async with browser(desk, desk.a, "observer") as (c, _csrf):
        shown = await c.get("/defenders", params={"after": "a\x00"})
    assert shown.status_code == 400


async def test_an_older_panic_stays_on_the_queue_in_a_storm_of_missed_checkins(
    desk: Desk,
) -> None:
    org = desk.a
    assert org.alert is not None and org.alert.priority == 0  # waiting since the fixture ran
    start = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        for i in range(OPEN_PAGE):  # a storm: an internet shutdown, every check-in missed
            person = Defender(
                id=uuid.uuid4(), org_id=org.org.id, handle=f"storm-{i:03d}", status="active"
            )
            s.add(person)
            await s.flush()
            org.defender = person
            await make_alert(s, org, AlertKind.missed_checkin, start + timedelta(seconds=i + 1))
    async with browser(desk, org, "responder") as (c, _csrf):
        page = (await c.get("/")).text
    assert f'data-alert="{org.alert.id}"' in page, "the waiting panic is not on the queue"
    assert page.index(f'data-alert="{org.alert.id}"') < page.index('data-alert="', 0) + 1


async def test_the_dashboard_says_why_a_private_webhook_is_refused(desk: Desk) -> None:
    from core.config import Mode, Settings

    desk.app.state.settings = Settings(mode=Mode.production)
    async with browser(desk, desk.a, "admin") as (c, csrf):
        answer = await c.post("/webhooks", data={"csrf": csrf, "url": "https://10.0.0.5/in"})
    assert answer.status_code == 400 and "must name a public address" in answer.text
