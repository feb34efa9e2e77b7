from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.app import create_app
from core.config import Mode, Settings
from core.crypto import Vault
from core.db import create_engine
from tests.api.conftest import Desk


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")  # type: ignore[arg-type]


async def test_it_reports_a_healthy_database(engine: AsyncEngine, vault: Vault) -> None:
    async with client(create_app(Settings(), engine, vault)) as c:
        answer = await c.get("/healthz")
    assert (answer.status_code, answer.json()["database"]) == (200, "ok")


async def test_it_reports_an_unreachable_database(vault: Vault) -> None:
    engine = create_engine("postgresql+asyncpg://amparo:pw@127.0.0.1:1/amparo")
    try:
        async with client(create_app(Settings(), engine, vault)) as c:
            answer = await c.get("/healthz")
    finally:
        await engine.dispose()
    assert answer.status_code == 503
    assert answer.json() == {"status": "degraded", "database": "unreachable"}


async def test_it_hides_the_api_docs_in_production(engine: AsyncEngine, vault: Vault) -> None:
    async with client(create_app(Settings(mode=Mode.production), engine, vault)) as c:
        assert (await c.get("/api/v1/openapi.json")).status_code == 404
        assert (await c.get("/api/v1/docs")).status_code == 404
    async with client(create_app(Settings(), engine, vault)) as c:
        assert (await c.get("/api/v1/openapi.json")).status_code == 200


async def test_production_gives_the_schema_to_signed_in_callers_only(desk: Desk) -> None:
    """DESIGN's /api/v1/openapi.json stays, in production too, for the desk's own callers (an
    external desk system holding a token, a responder's session); a stranger, a revoked or a
    made-up token get 404, as for any unknown path (R22). The docs UI stays off."""
    desk.app = create_app(Settings(mode=Mode.production), desk.app.state.engine, desk.vault)
    async with (
        await desk.client(desk.a, "token") as token,
        await desk.client(desk.a, "responder") as person,
    ):
        by_token = await token.get("/api/v1/openapi.json")
        by_person = await person.get("/api/v1/openapi.json")
        docs = await person.get("/api/v1/docs")
        token.headers["Authorization"] = "Bearer amp_made-up"
        made_up = await token.get("/api/v1/openapi.json")
    async with desk.anonymous() as stranger:
        anonymous = await stranger.get("/api/v1/openapi.json")
    assert (by_token.status_code, by_person.status_code) == (200, 200)
    assert "/api/v1/alerts" in by_token.json()["paths"] and by_person.json() == by_token.json()
    assert (docs.status_code, made_up.status_code, anonymous.status_code) == (404, 404, 404)


# /metrics: live P0 depth and delivery counters (whether an alert went out just now) answer
# only a direct loopback connection, or a scraper with AMPARO_METRICS_TOKEN.
PROXY, OUTSIDE = "172.31.250.1", "203.0.113.7"  # compose's gateway (the TLS proxy), a client
METRICS_TOKEN = "m" * 40


async def metrics_status(
    app: object, peer: str, headers: dict[str, str] | None = None, *, proxied: bool = False
) -> int:
    asgi: object = app
    if proxied:  # what uvicorn does with AMPARO_TRUSTED_PROXIES (amparo/serve.py)
        asgi = ProxyHeadersMiddleware(app, trusted_hosts=[PROXY, "127.0.0.1"])  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=asgi, client=(peer, 40000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="https://desk.example.org") as c:
        return (await c.get("/metrics", headers=headers or {})).status_code


async def test_metrics_answer_a_direct_loopback_scraper(engine: AsyncEngine, vault: Vault) -> None:
    app = create_app(Settings(mode=Mode.production), engine, vault)
    assert await metrics_status(app, "127.0.0.1") == 200
    assert await metrics_status(app, "::1") == 200
    assert await metrics_status(app, "::ffff:127.0.0.1") == 200


async def test_metrics_are_hidden_from_anyone_a_proxy_relays(
    engine: AsyncEngine, vault: Vault
) -> None:
    app = create_app(Settings(mode=Mode.production, trusted_proxies=PROXY), engine, vault)
    outside = {"X-Forwarded-For": OUTSIDE}
    assert await metrics_status(app, PROXY, outside) == 404
    assert await metrics_status(app, PROXY, outside, proxied=True) == 404
    # A TLS proxy on this machine's loopback: its peer address is loopback, its headers are not.
    assert await metrics_status(app, "127.0.0.1", outside) == 404
    assert await metrics_status(app, "127.0.0.1", {"Forwarded": f"for={OUTSIDE}"}) == 404
    assert await metrics_status(app, "127.0.0.1", {"X-Real-IP": OUTSIDE}) == 404
    # A client claiming to be loopback through the proxy.
    spoofed = {"X-Forwarded-For": "127.0.0.1"}
    assert await metrics_status(app, "127.0.0.1", spoofed, proxied=True) == 404
    # Another container on the compose network, without going through any proxy.
    assert await metrics_status(app, "172.31.250.9") == 404
    assert await metrics_status(app, OUTSIDE) == 404


async def test_metrics_answer_a_scraper_with_the_metrics_token(
    engine: AsyncEngine, vault: Vault
) -> None:
    settings = Settings(mode=Mode.production, metrics_token=METRICS_TOKEN)
    app = create_app(settings, engine, vault)
    right = {"Authorization": f"Bearer {METRICS_TOKEN}", "X-Forwarded-For": OUTSIDE}
    wrong = {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}x", "X-Forwarded-For": OUTSIDE}
    assert await metrics_status(app, PROXY, right) == 200
    assert await metrics_status(app, PROXY, wrong) == 404
    assert (
        await metrics_status(app, "172.31.250.9", {"Authorization": right["Authorization"]}) == 200
    )
    # Without the setting, a bearer header opens nothing.
    plain = create_app(Settings(mode=Mode.production), engine, vault)
    assert await metrics_status(plain, PROXY, right) == 404


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="AMPARO_METRICS_TOKEN"):
        Settings(metrics_token="short")


async def test_it_reports_a_channel_that_cannot_receive(
    engine: AsyncEngine, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telegram polling failing (a revoked token, a block upstream): no defender's message
    arrives, so /healthz says so once it has lasted INBOUND_DOWN_S (R27)."""
    from api import app as module

    class Polling:
        down = 0.0

        def inbound_down_s(self) -> float:
            return self.down

    telegram = Polling()
    app = create_app(Settings(), engine, vault)
    app.state.channels = {"telegram": telegram, "console": object()}
    async with client(app) as c:
        fine = await c.get("/healthz")
        telegram.down = module.INBOUND_DOWN_S + 1
        failing = await c.get("/healthz")
    assert (fine.status_code, fine.json()["inbound"]) == (200, {"telegram": "ok"})
    assert (failing.status_code, failing.json()["status"]) == (503, "degraded")
    assert failing.json()["inbound"] == {"telegram": "failing"}
