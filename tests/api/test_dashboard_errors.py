"""A dashboard page or form that fails on the database answers a page, not JSON. PostgreSQL
aborting the request's transaction (a deadlock, 40P01: ``core.db.retryable``) is a 503 with
Retry-After, any other error a 500, as on the API; but a responder's browser showed the API's
JSON body as raw text. Now pages outside /api/ get the dashboard's translated HTML page with
a link back to the queue; /api/v1 keeps its JSON contract (DESIGN.md, "stable contracts").
The same for what FastAPI itself refused: an unknown page (404), a form's URL fetched with GET
(405), a malformed form or query (422), a malformed id in the URL (404, as an unknown id)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from api import errors
from core import desk_alerts, desk_sessions
from core.i18n import gettext
from core.models import AlertState
from tests.api.conftest import BASE, Desk
from tests.api.test_dashboard import browser, state_of
from tests.deadlocks import DeadlockDetected


def busy(*_args: Any, **_kwargs: Any) -> Any:
    raise OperationalError("SELECT ...", None, DeadlockDetected("deadlock detected"))


def broken(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("a bug")


def sentence(locale: str, message: str) -> str:
    text = gettext(locale)(message)
    return text[:1].upper() + text[1:]


async def test_a_page_the_database_aborts_is_a_translated_503_page(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with browser(desk, desk.a, "responder") as (c, _csrf):
        monkeypatch.setattr(desk_alerts, "list_alerts", busy)
        for lang in ("en", "ar"):
            page = await c.get("/", headers={"accept-language": lang})
            assert (page.status_code, page.headers["retry-after"]) == (503, "1")
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["content-language"] == lang
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert sentence(lang, errors.BUSY) in page.text
            assert gettext(lang)("Back to the alert queue") in page.text
            assert '<a href="/">' in page.text and '"detail"' not in page.text
        assert '<html lang="ar" dir="rtl">' in page.text
        assert sentence("ar", errors.BUSY) != sentence("en", errors.BUSY)


async def test_a_page_that_fails_otherwise_is_a_translated_500_page(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert desk.a.alert is not None
    url = f"/alerts/{desk.a.alert.id}"
    quiet = httpx.ASGITransport(app=desk.app, raise_app_exceptions=False)  # answer, not raise
    async with browser(desk, desk.a, "responder") as (c, _csrf):
        cookies = c.cookies
    monkeypatch.setattr(desk_alerts, "get_alert", broken)
    async with httpx.AsyncClient(transport=quiet, base_url=BASE, cookies=cookies) as c:
        page = await c.get(url, headers={"accept-language": "es"})
    assert page.status_code == 500 and "retry-after" not in page.headers
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    spanish = sentence("es", errors.SORRY)
    assert spanish in page.text and spanish != errors.SORRY
    assert '<html lang="es" dir="ltr">' in page.text and "a bug" not in page.text


async def test_the_api_keeps_answering_json(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the caller accepts: /api/v1 answers JSON, the dashboard's pages HTML."""
    monkeypatch.setattr(desk_alerts, "list_alerts", busy)
    html = {"accept": "text/html", "accept-language": "ar"}
    async with await desk.client(desk.a, "responder") as c:
        answer = await c.get("/api/v1/alerts", headers=html)
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "1")
    assert answer.json() == {"detail": gettext("ar")(errors.BUSY)}
    monkeypatch.setattr(desk_alerts, "list_alerts", broken)
    quiet = httpx.ASGITransport(app=desk.app, raise_app_exceptions=False)
    token = {"authorization": f"Bearer {desk.a.token}"}
    async with httpx.AsyncClient(transport=quiet, base_url=BASE, headers=token) as c:
        answer = await c.get("/api/v1/alerts", headers=html)
    assert answer.status_code == 500
    assert answer.json() == {"detail": gettext("ar")(errors.INTERNAL)}


def shown(page: httpx.Response, status: int, lang: str, text: str) -> None:
    """The dashboard's error page: ``status``, ``text`` in ``lang``, the way back, no JSON."""
    assert page.status_code == status, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-language"] == lang
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert text in page.text and gettext(lang)("Back to the alert queue") in page.text
    assert '<a href="/">' in page.text and '"detail"' not in page.text
    assert f'<html lang="{lang}" dir="{"rtl" if lang == "ar" else "ltr"}">' in page.text


async def test_an_unknown_page_or_id_is_a_translated_404_page(desk: Desk) -> None:
    assert desk.b.alert is not None
    async with browser(desk, desk.a, "responder") as (c, csrf):
        for lang in ("es", "ar"):
            c.headers["accept-language"] = lang
            missing = gettext(lang)("Not found")
            assert missing != "Not found"
            for path in (
                "/no-such-page",
                "/static/no-such-file.css",
                f"/alerts/{uuid.uuid4()}",
                f"/alerts/{desk.b.alert.id}",  # another organisation's: as if none
                "/alerts/not-an-id",  # malformed: names no page either
                f"/reports/{uuid.uuid4()}",
                "/reports/not-an-id",
                "/rollcalls/42",
            ):
                shown(await c.get(path), 404, lang, missing)
            posted = await c.post("/alerts/not-an-id/acknowledge", data={"csrf": csrf})
            shown(posted, 404, lang, missing)
        signed_in = await c.get("/no-such-page")
    async with desk.anonymous() as stranger:  # the same page, logged in or not
        stranger.headers["accept-language"] = "ar"
        unknown = await stranger.get("/no-such-page")
        malformed = await stranger.get("/alerts/not-an-id")
        protected = await stranger.get(f"/alerts/{uuid.uuid4()}")
    assert unknown.text == signed_in.text and unknown.status_code == 404
    shown(malformed, 404, "ar", gettext("ar")("Not found"))
    assert (protected.status_code, protected.headers["location"]) == (303, "/login")


async def test_a_forms_url_fetched_with_get_is_a_translated_405_page(desk: Desk) -> None:
    assert desk.a.alert is not None
    text = sentence("fr", errors.GENERIC[405])
    async with browser(desk, desk.a, "responder") as (c, _csrf):
        c.headers["accept-language"] = "fr"
        for path in (f"/alerts/{desk.a.alert.id}/acknowledge", "/logout", "/rollcalls"):
            page = await c.get(path)
            shown(page, 405, "fr", text)
            assert page.headers["allow"] == "POST"
    async with desk.anonymous() as stranger:
        page = await stranger.get("/logout", headers={"accept-language": "fr"})
    shown(page, 405, "fr", text)


async def test_a_malformed_form_or_query_is_a_translated_422_page(desk: Desk) -> None:
    assert desk.a.alert is not None
    text = sentence("pt", errors.INVALID)
    async with browser(desk, desk.a, "admin") as (c, csrf):
        c.headers["accept-language"] = "pt"
        url = f"/alerts/{desk.a.alert.id}/resolve"
        resolving = await c.post(url, data={"csrf": csrf, "outcome": "safe" * 10})
        shown(resolving, 422, "pt", text)
        assert "safesafe" not in resolving.text and "outcome" not in resolving.text
        shown(await c.post("/invites", data={"csrf": csrf, "days": "many"}), 422, "pt", text)
        shown(await c.get("/?state=bogus"), 422, "pt", text)
        shown(await c.get("/audit?before=0"), 422, "pt", text)
    assert await state_of(desk, desk.a) is AlertState.triggered


async def test_the_api_keeps_its_json_errors(desk: Desk) -> None:
    """404, 405 and 422 under /api/v1 stay the API's JSON, whatever the caller accepts."""
    assert desk.a.alert is not None
    html = {"accept": "text/html", "accept-language": "es"}
    async with await desk.client(desk.a, "responder") as c:
        unknown = await c.get("/api/v1/no-such-thing", headers=html)
        foreign = await c.get(f"/api/v1/alerts/{uuid.uuid4()}", headers=html)
        method = await c.get(f"/api/v1/alerts/{desk.a.alert.id}/acknowledge", headers=html)
        malformed = await c.get("/api/v1/alerts/not-an-id", headers=html)
    _ = gettext("es")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": _(errors.NOT_FOUND)})
    assert (foreign.status_code, foreign.json()) == (404, {"detail": _(errors.NOT_FOUND)})
    assert (method.status_code, method.json()) == (405, {"detail": _("method not allowed")})
    assert malformed.status_code == 422
    assert malformed.json() == {
        "detail": [{"loc": ["path", "alert_id"], "msg": _(errors.INVALID), "type": "uuid_parsing"}]
    }
    async with desk.anonymous() as stranger:
        health = await stranger.post("/healthz", headers=html)
    assert (health.status_code, health.json()) == (405, {"detail": _("method not allowed")})


async def test_a_session_found_dead_as_a_page_commits_is_a_translated_401_page(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The responder disabled, or the session revoked, while the request ran (SQLite finds it
    just before the commit, api.deps.get_db): the API's 401, as a page on the dashboard."""

    async def dead(*_args: Any) -> bool:
        return False

    async with browser(desk, desk.a, "responder") as (c, _csrf):
        monkeypatch.setattr(desk_sessions, "still_held", dead)
        page = await c.get("/", headers={"accept-language": "ar"})
        shown(page, 401, "ar", sentence("ar", errors.UNAUTHENTICATED))
        assert desk.a.alert is not None
        async with await desk.client(desk.a, "responder") as api:
            url = f"/api/v1/alerts/{desk.a.alert.id}"
            answer = await api.get(url, headers={"accept-language": "ar"})
    assert answer.status_code == 401
    assert answer.json() == {"detail": gettext("ar")(errors.UNAUTHENTICATED)}


async def test_a_form_the_server_will_not_read_is_a_translated_page(desk: Desk) -> None:
    """A NUL in a form or a query (400) or a body over the cap (413), refused before any route
    (api.hardening): a page on the dashboard; the API's JSON is tests/api/test_nul.py's."""
    assert desk.a.alert is not None
    async with browser(desk, desk.a, "admin") as (c, csrf):
        c.headers["accept-language"] = "es"
        nul = await c.post("/webhooks", data={"csrf": csrf, "url": "https://a\x00.org/h"})
        has_nul = sentence("es", errors.HAS_NUL)
        shown(nul, 400, "es", has_nul)
        shown(await c.get("/", params={"cursor": "\x00"}), 400, "es", has_nul)
        url = f"/alerts/{desk.a.alert.id}/notes"
        big = await c.post(url, data={"csrf": csrf, "text": "x" * 300_000})
        shown(big, 413, "es", sentence("es", errors.TOO_LARGE))
        assert big.headers["cache-control"] == "no-store"
    async with await desk.client(desk.a, "admin") as api:
        answer = await api.post("/api/v1/policies", content=b"x" * 300_000)
    assert answer.status_code == 413 and answer.json() == {"detail": errors.TOO_LARGE}
