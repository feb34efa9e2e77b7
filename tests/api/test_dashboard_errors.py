"""A dashboard page or form that fails on the database answers a page, not JSON. PostgreSQL
aborting the request's transaction (a deadlock, 40P01: ``core.db.retryable``) is a 503 with
Retry-After, any other error a 500, as on the API; but a responder's browser showed the API's
JSON body as raw text. Now pages outside /api/ get the dashboard's translated HTML page with
a link back to the queue; /api/v1 keeps its JSON contract (DESIGN.md, "stable contracts")."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from api import errors
from core import desk_alerts
from core.i18n import gettext
from tests.api.conftest import BASE, Desk
from tests.api.test_dashboard import browser
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
