"""The responders' dashboard over HTTP (both backends): login with TOTP, tenancy, CSRF on
every form, roles, the audit trail, logout. The browser itself: test_dashboard_browser.py."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from api.app import PAGES
from api.dashboard import CSRF_COOKIE, LOGIN_COOKIE
from api.deps import COOKIE
from api.pages import STATIC
from api.routes import PREFIX
from core import actions, defenders, desk_alerts
from core.db import transaction
from core.defenders import code_index
from core.models import (
    Alert,
    AlertKind,
    AlertState,
    AuditEntry,
    Defender,
    DefenderStatus,
    DeskSession,
    InviteCode,
    Organisation,
    Responder,
)
from tests.api.conftest import PASSWORD, Desk, Org, code, make_alert, undeletable

NONCE = re.compile(r'name="nonce" value="([^"]+)"')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
NEW = "a brand new passphrase"
# A note on the alert page: its author, then its sealed box (by the note's id).
NOTE_AUTHOR = re.compile(
    r'<span class="actor">([^<]*)</span>\s*<div class="sealed"[^>]*data-record="([^"]+)"'
)


async def log_in(
    c: httpx.AsyncClient, org: Org, role: str, *, totp: str | None = None
) -> httpx.Response:
    form = await c.get("/login")
    nonce = NONCE.search(form.text)
    assert nonce is not None
    return await c.post(
        "/login",
        data={
            "username": org.responders[role].username,
            "password": PASSWORD,
            "totp": totp or code(org.totp[role]),
            "nonce": nonce.group(1),
        },
    )


@asynccontextmanager
async def browser(desk: Desk, org: Org, role: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client logged in through the login form, and the CSRF token its pages carry."""
    async with desk.anonymous() as c:
        answer = await log_in(c, org, role)
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        page = await c.get("/")
        token = CSRF.search(page.text)
        assert page.status_code == 200 and token is not None
        yield c, token.group(1)


async def state_of(desk: Desk, org: Org) -> AlertState:
    assert org.alert is not None
    async with desk.sessions() as s:
        alert = await s.get(Alert, org.alert.id)
        assert alert is not None
        return alert.state


async def test_it_sends_a_stranger_to_the_login_page(desk: Desk) -> None:
    async with desk.anonymous() as c:
        for path in ("/", "/password", f"/alerts/{desk.a.alert.id}"):  # type: ignore[union-attr]
            answer = await c.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/login"
        page = await c.get("/login")
    assert page.status_code == 200 and 'name="totp"' in page.text
    assert "no-store" in page.headers["cache-control"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(LOGIN_COOKIE) and "Secure" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie


async def test_it_logs_in_with_password_and_totp_and_shows_only_its_own_queue(
    desk: Desk,
) -> None:
    async with browser(desk, desk.a, "responder") as (c, _csrf):
        cookies = set(c.cookies)
        assert {COOKIE, CSRF_COOKIE} <= cookies and LOGIN_COOKIE not in cookies
        page = await c.get("/")
        assert desk.a.alert is not None and desk.b.alert is not None
        assert f"/alerts/{desk.a.alert.id}" in page.text
        assert "calm-heron-alpha" in page.text
        assert str(desk.b.alert.id) not in page.text and "bravo" not in page.text
        foreign = await c.get(f"/alerts/{desk.b.alert.id}")  # another organisation's alert
        assert foreign.status_code == 404 and "calm-heron-bravo" not in foreign.text


async def test_a_reused_totp_code_or_a_wrong_one_is_refused_with_a_translated_answer(
    desk: Desk,
) -> None:
    used = code(desk.a.totp["responder"])
    async with desk.anonymous() as first:
        assert (await log_in(first, desk.a, "responder", totp=used)).status_code == 303
    async with desk.anonymous() as again:
        again.headers["accept-language"] = "es"
        answer = await log_in(again, desk.a, "responder", totp=used)
        assert answer.status_code == 401 and COOKIE not in again.cookies
        assert "usuario, contraseña o código incorrectos" in answer.text
        wrong = await log_in(again, desk.a, "responder", totp="000000")
        assert wrong.status_code == 401


async def test_login_without_the_forms_own_cookie_is_refused(desk: Desk) -> None:
    """Login CSRF: another site cannot log a responder into an account of its choosing."""
    async with desk.anonymous() as c:
        answer = await c.post(
            "/login",
            data={
                "username": desk.a.responders["responder"].username,
                "password": PASSWORD,
                "totp": code(desk.a.totp["responder"]),
                "nonce": "forged",
            },
        )
    assert answer.status_code == 400 and COOKIE not in c.cookies


async def test_acknowledge_and_resolve_need_the_sessions_csrf_token(desk: Desk) -> None:
    assert desk.a.alert is not None
    url = f"/alerts/{desk.a.alert.id}"
    async with browser(desk, desk.a, "responder") as (c, csrf):
        for forged in ("", "x" * 43):
            answer = await c.post(url + "/acknowledge", data={"csrf": forged})
            assert answer.status_code == 303 and answer.headers["location"] == "/login"
        assert await state_of(desk, desk.a) is AlertState.triggered

        answer = await c.post(url + "/acknowledge", data={"csrf": csrf})
        assert answer.headers["location"] == url + "?notice=acknowledged"
        assert await state_of(desk, desk.a) is AlertState.acknowledged
        page = await c.get(answer.headers["location"])
        assert "You acknowledged the alert." in page.text
        assert 'data-event="acknowledged"' in page.text
        assert desk.a.responders["responder"].username in page.text  # the timeline's actor

        answer = await c.post(url + "/resolve", data={"csrf": csrf, "outcome": "nonsense"})
        assert await state_of(desk, desk.a) is AlertState.acknowledged
        answer = await c.post(url + "/resolve", data={"csrf": csrf, "outcome": "safe"})
        assert answer.headers["location"] == "/?notice=resolved"
        assert await state_of(desk, desk.a) is AlertState.resolved
        again = await c.post(url + "/acknowledge", data={"csrf": csrf})
        assert again.headers["location"] == url + "?notice=not_open"
        resolved = await c.get("/?state=resolved")
        assert url in resolved.text and "Safe" in resolved.text

    async with desk.sessions() as s:
        actions = set(
            (
                await s.execute(
                    select(AuditEntry.action).where(AuditEntry.org_id == desk.a.org.id)
                )
            ).scalars()
        )
    assert {"auth.login", "alert.view", "alert.acknowledge", "alert.resolve"} <= actions


async def test_an_observer_sees_the_queue_but_cannot_act(desk: Desk) -> None:
    assert desk.a.alert is not None
    url = f"/alerts/{desk.a.alert.id}"
    async with browser(desk, desk.a, "observer") as (c, csrf):
        page = await c.get(url)
        assert page.status_code == 200 and "/acknowledge" not in page.text
        answer = await c.post(url + "/acknowledge", data={"csrf": csrf})
        assert answer.headers["location"] == url + "?notice=forbidden"
    assert await state_of(desk, desk.a) is AlertState.triggered


async def test_another_organisations_alert_cannot_be_acted_on(desk: Desk) -> None:
    assert desk.b.alert is not None
    async with browser(desk, desk.a, "admin") as (c, csrf):
        answer = await c.post(f"/alerts/{desk.b.alert.id}/acknowledge", data={"csrf": csrf})
    assert answer.status_code == 404
    assert await state_of(desk, desk.b) is AlertState.triggered


async def test_logout_ends_the_session_for_good(desk: Desk) -> None:
    async with browser(desk, desk.a, "responder") as (c, csrf):
        kept = dict(c.cookies)
        answer = await c.post("/logout", data={"csrf": csrf})
        assert answer.headers["location"] == "/login"
    async with desk.anonymous() as replay:
        for name, value in kept.items():
            replay.cookies.set(name, value, domain="desk.test")
        assert (await replay.get("/")).headers["location"] == "/login"
        assert (await replay.get("/api/v1/auth/me")).status_code == 401


async def test_a_new_responder_changes_the_password_before_anything_else(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        r = await s.get(Responder, desk.a.responders["responder"].id)
        assert r is not None
        r.must_change_password = True
    async with desk.anonymous() as c:
        answer = await log_in(c, desk.a, "responder")
        assert answer.headers["location"] == "/password"
        assert (await c.get("/")).headers["location"] == "/password"
        page = await c.get("/password")
        csrf = CSRF.search(page.text)
        assert csrf is not None
        short = await c.post(
            "/password",
            data={"csrf": csrf.group(1), "current": PASSWORD, "new": "short", "again": "short"},
        )
        assert short.status_code == 400
        answer = await c.post(
            "/password",
            data={"csrf": csrf.group(1), "current": PASSWORD, "new": NEW, "again": NEW},
        )
        assert answer.headers["location"] == "/?notice=password"
        page = await c.get(answer.headers["location"])
        assert page.status_code == 200 and "Your password is changed." in page.text


async def test_arabic_pages_are_right_to_left_and_translated(desk: Desk) -> None:
    async with browser(desk, desk.a, "responder") as (c, _csrf):
        c.headers["accept-language"] = "ar"
        page = await c.get("/")
    assert '<html lang="ar" dir="rtl">' in page.text
    assert "Waiting for a responder" not in page.text and "ذعر" in page.text  # "panic"


async def test_a_session_past_its_idle_timeout_goes_back_to_login(desk: Desk) -> None:
    async with browser(desk, desk.a, "responder") as (c, _csrf):
        async with transaction(desk.sessions) as s:
            for row in (await s.execute(select(DeskSession))).scalars():
                row.last_seen_at = datetime.now(UTC) - timedelta(days=1)
        assert (await c.get("/")).headers["location"] == "/login"


async def test_the_queue_refreshing_itself_does_not_keep_the_session_alive(desk: Desk) -> None:
    async def last_seen() -> datetime:
        async with desk.sessions() as s:
            return (await s.execute(select(DeskSession.last_seen_at))).scalar_one()

    async with browser(desk, desk.a, "responder") as (c, _csrf):
        page = await c.get("/")
        assert 'content="30; url=/?auto=1"' in page.text
        async with transaction(desk.sessions) as s:
            for row in (await s.execute(select(DeskSession))).scalars():
                row.last_seen_at = datetime.now(UTC) - timedelta(minutes=20)
        before = await last_seen()
        assert (await c.get("/?auto=1")).status_code == 200  # still within the idle timeout
        assert await last_seen() == before
        assert (await c.get("/")).status_code == 200  # a responder's own visit counts
        assert await last_seen() > before


def test_the_vendored_libsodium_is_the_one_its_readme_names() -> None:
    vendor = STATIC / "vendor"
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert 'from"./libsodium-sumo.js"' in (vendor / "libsodium-wrappers.js").read_text()


async def test_the_scripts_are_served_as_javascript_from_the_desk_itself(desk: Desk) -> None:
    async with desk.anonymous() as c:
        for path in ("unseal.js", "vendor/libsodium-wrappers.js", "vendor/libsodium-sumo.js"):
            answer = await c.get(f"/static/{path}")
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/javascript")
            assert answer.headers["x-content-type-options"] == "nosniff"


async def test_reports_list_only_the_organisations_own_with_their_triage(desk: Desk) -> None:
    assert desk.a.report is not None and desk.b.report is not None
    async with browser(desk, desk.a, "observer") as (c, _csrf):
        page = await c.get("/reports")
        assert page.status_code == 200
        assert f"/reports/{desk.a.report.id}" in page.text
        assert str(desk.b.report.id) not in page.text
        assert "A death threat" in page.text  # the act's code 02010302, in the desk's words
        # The triage's country is a formula from a defender: shown as text, never as markup.
        assert "=HYPERLINK(&#34;http://x&#34;)" in page.text
        assert (await c.get(f"/reports/{desk.b.report.id}")).status_code == 404
        one = await c.get(f"/reports/{desk.a.report.id}")
        assert one.status_code == 200 and 'data-kind="report"' in one.text
        assert "SECRET-CANARY" not in one.text  # the body stays sealed on the server's side
    async with desk.sessions() as s:
        viewed = (
            await s.execute(
                select(AuditEntry.action).where(
                    AuditEntry.org_id == desk.a.org.id, AuditEntry.action == "report.view_sealed"
                )
            )
        ).all()
    assert len(viewed) == 1


INVITE = re.compile(r'<output class="invite-code"[^>]*>([^<]+)</output>')


async def test_defenders_show_by_handle_and_pause_and_resume(desk: Desk) -> None:
    assert desk.a.defender is not None and desk.b.defender is not None
    async with browser(desk, desk.a, "responder") as (c, csrf):
        page = await c.get("/defenders")
        assert "calm-heron-alpha" in page.text and "calm-heron-bravo" not in page.text
        url = f"/defenders/{desk.a.defender.id}"
        answer = await c.post(url + "/pause", data={"csrf": csrf})
        assert answer.headers["location"] == "/defenders"
        assert await status_of(desk, desk.a.defender.id) is DefenderStatus.paused
        assert "Resume check-ins" in (await c.get("/defenders")).text
        await c.post(url + "/resume", data={"csrf": csrf})
        assert await status_of(desk, desk.a.defender.id) is DefenderStatus.active
        foreign = await c.post(f"/defenders/{desk.b.defender.id}/pause", data={"csrf": csrf})
        assert foreign.status_code == 404
        assert await status_of(desk, desk.b.defender.id) is DefenderStatus.active
        forged = await c.post(url + "/pause", data={"csrf": "forged"})
        assert forged.headers["location"] == "/login"
        assert await status_of(desk, desk.a.defender.id) is DefenderStatus.active


async def test_defenders_show_messages_discreet_mode_could_not_delete(desk: Desk) -> None:
    """R12's alarm on the defenders page, in the responder's language, with what to do."""
    assert desk.a.defender is not None
    async with browser(desk, desk.a, "observer") as (c, _csrf):
        assert "could not be deleted" not in (await c.get("/defenders")).text
        await undeletable(desk, desk.a.defender.id, 2)
        page = await c.get("/defenders")
        assert "2 messages could not be deleted from their phone" in page.text
        assert "delete them by hand" in page.text
        await undeletable(desk, desk.a.defender.id, 1)
        c.headers["accept-language"] = "es"
        assert "3 mensajes no se pudieron borrar" in (await c.get("/defenders")).text


async def test_a_defender_hidden_after_a_forced_deletion_is_shown_and_restored(
    desk: Desk,
) -> None:
    assert desk.a.defender is not None and desk.b.defender is not None
    for mine in (desk.a.defender, desk.b.defender):
        async with transaction(desk.sessions) as s:
            row = await s.get(Defender, mine.id)
            assert row is not None
            await defenders.hide(s, defender=row)
    async with browser(desk, desk.a, "observer") as (c, csrf):
        page = await c.get("/defenders")
        assert "deleted under duress" in page.text and "/restore" not in page.text
        refused = await c.post(f"/defenders/{desk.a.defender.id}/restore", data={"csrf": csrf})
        assert refused.headers["location"] == "/defenders?notice=forbidden"
    async with browser(desk, desk.a, "responder") as (c, csrf):
        url = f"/defenders/{desk.a.defender.id}/restore"
        assert f'action="{url}"' in (await c.get("/defenders")).text
        forged = await c.post(url, data={"csrf": "forged"})
        assert await status_of(desk, desk.a.defender.id) is DefenderStatus.hidden
        foreign = await c.post(f"/defenders/{desk.b.defender.id}/restore", data={"csrf": csrf})
        answer = await c.post(url, data={"csrf": csrf})
    assert forged.headers["location"] == "/login" and foreign.status_code == 404
    assert answer.headers["location"] == "/defenders"
    assert await status_of(desk, desk.a.defender.id) is DefenderStatus.active
    assert await status_of(desk, desk.b.defender.id) is DefenderStatus.hidden


async def status_of(desk: Desk, defender_id: uuid.UUID) -> DefenderStatus:
    async with desk.sessions() as s:
        found = await s.get(Defender, defender_id)
        assert found is not None
        return found.status


async def test_an_invite_code_is_shown_once_and_can_be_revoked(desk: Desk) -> None:
    async with browser(desk, desk.a, "responder") as (c, csrf):
        answer = await c.post("/invites", data={"csrf": csrf, "days": "1"})
        assert answer.status_code == 200
        shown = INVITE.search(answer.text)
        assert shown is not None
        index = code_index(desk.vault, "defender", shown.group(1))
        async with desk.sessions() as s:
            invite = (
                await s.execute(select(InviteCode).where(InviteCode.code_index == index))
            ).scalar_one()
        assert invite.org_id == desk.a.org.id
        assert timedelta(hours=23) < invite.expires_at - invite.created_at <= timedelta(days=1)
        later = await c.get("/defenders")
        assert shown.group(1) not in later.text and f'data-invite="{invite.id}"' in later.text
        await c.post(f"/invites/{invite.id}/revoke", data={"csrf": csrf})
        async with desk.sessions() as s:
            row = await s.get(InviteCode, invite.id)
            assert row is not None and row.revoked_at is not None
    async with browser(desk, desk.a, "observer") as (c, csrf):
        page = await c.get("/defenders")
        assert 'action="/invites"' not in page.text and "/pause" not in page.text
        answer = await c.post("/invites", data={"csrf": csrf})
        assert answer.headers["location"] == "/defenders?notice=forbidden"
        assert INVITE.search(answer.text) is None


async def test_open_alerts_list_the_most_urgent_and_longest_waiting_first(desk: Desk) -> None:
    org = desk.a
    assert org.alert is not None
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        older = await make_alert(s, org, AlertKind.missed_checkin, now - timedelta(hours=2))
        older.dedup_key = older.open_key = "older"
        newer = await make_alert(s, org, AlertKind.missed_checkin, now - timedelta(minutes=1))
        newer.dedup_key = newer.open_key = "newer"
    async with browser(desk, org, "responder") as (c, _csrf):
        page = (await c.get("/")).text
    order = [page.index(str(a.id)) for a in (org.alert, older, newer)]
    assert order == sorted(order)  # P0 first, then the P1 that has waited longest
    assert 'content="30; url=/?auto=1"' in page  # the refresh drops any one-off notice


async def test_guessing_the_current_password_is_throttled(desk: Desk) -> None:
    async with browser(desk, desk.a, "responder") as (c, csrf):
        statuses = [
            (
                await c.post(
                    "/password",
                    data={"csrf": csrf, "current": f"guess {i}", "new": NEW, "again": NEW},
                )
            ).status_code
            for i in range(7)
        ]
    assert statuses[0] == 400 and statuses[-1] == 429
    async with desk.sessions() as s:
        r = await s.get(Responder, desk.a.responders["responder"].id)
        assert r is not None and r.password_hash == desk.a.responders["responder"].password_hash


def test_no_page_lives_under_the_api_prefix() -> None:
    """The desk API's routes are tried before the pages (api.app): a page under its prefix
    could be shadowed by an API route."""
    paths = [route.path for module in PAGES for route in module.router.routes]  # type: ignore[attr-defined]
    assert paths and not [p for p in paths if p.startswith(PREFIX)]


async def test_the_timeline_names_a_further_missed_check_in(desk: Desk) -> None:
    """A deadline missed while the missed check-in alert is open (core.alerts) is a line of
    its own on the timeline, in the responder's words."""
    assert desk.a.alert is not None
    async with transaction(desk.sessions) as s:
        alert = await s.get(Alert, desk.a.alert.id)
        assert alert is not None
        s.add(actions.event(alert, "missed_again", datetime.now(UTC)))
    async with browser(desk, desk.a, "responder") as (c, _csrf):
        page = await c.get(f"/alerts/{desk.a.alert.id}")
    assert 'data-event="missed_again"' in page.text
    assert "The defender missed another check-in" in page.text


def test_every_timeline_kind_the_engine_writes_has_the_desks_words() -> None:
    """An event kind without a label shows raw on the timeline ("raised_again" did): every
    kind written in core/ or flows/ (``actions.event(…, "kind"…)`` and the like) is in
    api.pages.EVENTS, and so translated."""
    import re
    from pathlib import Path

    from api.pages import EVENTS

    root = Path(__file__).resolve().parents[2]
    written = re.compile(r'\b(?:event|alert_event|_event)\([^()]*?, "([a-z_]+)"')
    kinds = {
        kind
        for folder in ("core", "flows")
        for path in (root / folder).rglob("*.py")
        for kind in written.findall(path.read_text())
    }
    assert {"triggered", "missed_again", "raised_again"} <= kinds  # the scan finds them
    assert kinds - set(EVENTS) == set()


async def test_a_note_the_defender_wrote_reads_defender(desk: Desk) -> None:
    """Review: the defender's words during an alert (flows.panic.told: a note with no author)
    showed an empty author beside the responder's named ones. They read "defender", in the
    responder's language, as the timeline's lines the defender's phone wrote do."""
    assert desk.a.alert is not None
    async with transaction(desk.sessions) as s:
        alert = await s.get(Alert, desk.a.alert.id)
        org = await s.get(Organisation, desk.a.org.id)
        assert alert is not None and org is not None
        mine = await desk_alerts.add_note(
            s,
            desk.vault,
            alert=alert,
            org=org,
            text="at the market",
            author_id=None,
            actor="defender",
            now=datetime.now(UTC),
        )
        r = desk.a.responders["responder"]
        theirs = await desk_alerts.add_note(
            s,
            desk.vault,
            alert=alert,
            org=org,
            text="calling her sister",
            author_id=r.id,
            actor=f"responder:{r.id}",
            now=datetime.now(UTC),
        )
    async with browser(desk, desk.a, "observer") as (c, _csrf):
        english = (await c.get(f"/alerts/{desk.a.alert.id}")).text
        c.headers["accept-language"] = "es"
        spanish = (await c.get(f"/alerts/{desk.a.alert.id}")).text
    for page, word in ((english, "defender"), (spanish, "defensor")):
        authors = {note: author for author, note in NOTE_AUTHOR.findall(page)}
        assert authors == {str(mine.id): word, str(theirs.id): "responder-alpha"}
        lines = re.findall(r'data-event="note_added">.*?<span class="actor">([^<]*)</span>', page)
        assert lines == [word, "responder-alpha"]  # the timeline, in the same words
