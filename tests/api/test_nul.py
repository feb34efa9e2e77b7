"""A NUL character anywhere a request types text (path, query, form, JSON) gets one clear,
translated 400 and changes nothing (both backends). PostgreSQL refuses a NUL in text: an API
token's name or a webhook's URL with one answered 500 there, and SQLite stored it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import func, select

from api.hardening import _FORM, _JSON, _has_nul
from core.models import ApiToken, Webhook
from tests.api.conftest import Desk
from tests.api.test_dashboard import browser

NUL = "x\u0000y"


async def _count(desk: Desk, model: type) -> int:
    async with desk.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_nul_in_json_is_refused_in_the_callers_language(desk: Desk) -> None:
    before = await _count(desk, ApiToken), await _count(desk, Webhook)
    async with await desk.client(desk.a, "admin") as c:
        c.headers["Accept-Language"] = "es"
        token = await c.post("/api/v1/tokens", json={"name": NUL, "scopes": ["alerts:read"]})
        hook = await c.post("/api/v1/webhooks", json={"url": f"https://{NUL}.example.org/h"})

        async def split() -> AsyncIterator[bytes]:  # \u0000 cut in two by the stream
            yield b'{"name": "a\\u00'
            yield b'00b", "scopes": ["alerts:read"]}'

        streamed = await c.post(
            "/api/v1/tokens", content=split(), headers={"content-type": "application/json"}
        )
    for answer in (token, hook, streamed):
        assert answer.status_code == 400, answer.text
        assert "NUL" in answer.json()["detail"] and "solicitud" in answer.json()["detail"]
    assert (await _count(desk, ApiToken), await _count(desk, Webhook)) == before


async def test_a_nul_in_a_path_query_or_form_is_refused(desk: Desk) -> None:
    async with await desk.client(desk.a, "admin") as c:
        query = await c.get("/api/v1/alerts", params={"cursor": NUL})
        path = await c.post("/api/v1/external/alerts/x%00/resolve", json={})
    async with browser(desk, desk.a, "admin") as (c, csrf):
        form = await c.post("/webhooks", data={"csrf": csrf, "url": f"https://{NUL}.org/h"})
    assert (query.status_code, path.status_code, form.status_code) == (400, 400, 400)


async def test_what_only_looks_like_a_nul_is_taken(desk: Desk) -> None:
    assert desk.a.alert is not None
    async with await desk.client(desk.a, "admin") as c:
        typed = r"she wrote \u0000 and %00 in the chat"  # a backslash and a percent sign
        note = await c.post(f"/api/v1/alerts/{desk.a.alert.id}/notes", json={"text": typed})
    assert note.status_code == 201, note.text
    assert not _has_nul(b'{"a": "\\\\u0000"}', _JSON)  # an escaped backslash, then u0000
    assert _has_nul(b'{"a": "\\\\\\u0000"}', _JSON)  # an escaped backslash, then a NUL
    assert not _has_nul(b'{"a": "%00"}', _JSON) and _has_nul(b"a=%00", _FORM)
