"""The FastAPI application: the dashboard at /, the desk API under /api/v1, health, metrics."""

from __future__ import annotations

import gc
import hmac
import ipaddress
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine

from api import (
    dashboard,
    dashboard_alert,
    dashboard_assign,
    dashboard_defender,
    dashboard_defenders,
    dashboard_desk,
    dashboard_handoffs,
    dashboard_keys,
    dashboard_reports,
    dashboard_rollcalls,
    openapi,
)
from api.deps import NowDep, SessionDep, signed_in
from api.pages import STATIC, error_page
from api.routes import install
from core import metrics
from core.config import Mode, Settings
from core.crypto import Vault
from core.db import ping, sessionmaker
from core.models import utcnow
from core.sweep import lag as sweep_lag

# The dashboard's page modules, included after the desk API (no path of theirs under it).
PAGES = (
    dashboard,
    dashboard_alert,
    dashboard_assign,
    dashboard_reports,
    dashboard_handoffs,  # before dashboard_defenders: its /defenders/{id}/{action}
    dashboard_defenders,
    dashboard_defender,
    dashboard_desk,
    dashboard_keys,
    dashboard_rollcalls,
)


@asynccontextmanager
async def _frozen_heap(_app: FastAPI) -> AsyncIterator[None]:
    """Once the server starts, what is loaded lives as long as the process: move it out of the
    garbage collector's reach, or each full collection walks the whole heap of FastAPI,
    SQLAlchemy and pydantic and stalls every request in flight (~100 ms, bench/api.py)."""
    gc.collect()
    gc.freeze()
    yield


# Headers a proxy adds when it forwards a request: a loopback peer that carries one of them is a
# proxy relaying someone else, who may be anywhere.
_FORWARDING = ("forwarded", "x-forwarded-for", "x-real-ip")


def _loopback(host: str | None) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def may_scrape(request: Request, settings: Settings) -> bool:
    """/metrics shows live P0 depth and delivery counts: whether an alert went out right now.
    It answers a direct connection from this machine's loopback that no proxy relayed, or a
    caller with ``Authorization: Bearer <AMPARO_METRICS_TOKEN>``; anyone else gets 404."""
    token = settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        expected = "Bearer " + token.get_secret_value()
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
    if any(name in request.headers for name in _FORWARDING):
        return False
    return _loopback(request.client.host if request.client else None)


INBOUND_DOWN_S = 120.0  # a channel that could not fetch messages this long is "failing"


def inbound_state(channels: Mapping[str, object]) -> dict[str, str]:
    """Each receiving channel that can tell: "ok", or "failing" once it has been unable to
    fetch messages for INBOUND_DOWN_S (Telegram polling: a revoked token, a block upstream).
    Meanwhile no panic, PIN or "I'm safe" arrives: a monitor must see it (R27)."""
    state = {}
    for name, channel in channels.items():
        down = getattr(channel, "inbound_down_s", None)
        if callable(down):
            state[name] = "failing" if down() >= INBOUND_DOWN_S else "ok"
    return state


OPENAPI = "/api/v1/openapi.json"


def create_app(settings: Settings, engine: AsyncEngine, vault: Vault) -> FastAPI:
    production = settings.mode is Mode.production
    app = FastAPI(
        title="Amparo protection desk",
        # FastAPI's own OpenTelemetry stays off: nothing about a request leaves the process
        # outside the logs' allowlist (R26), even with FASTAPI_OTEL_AUTO_CONFIGURE and an
        # OTLP endpoint in the environment; and no request looks up the global providers.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
        lifespan=_frozen_heap,
        openapi_url=None if production else OPENAPI,
        docs_url=None if production else "/api/v1/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessionmaker(engine)
    app.state.vault = vault
    app.state.error_page = error_page  # a dashboard page's errors (api.errors.failed)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """Liveness and the state of what escalation depends on."""
        try:
            await ping(engine)
            async with app.state.sessions() as session:
                engine_state = await metrics.engine_health(session, utcnow())
            database = "ok"
        except Exception:  # any failure means "not ok"; details stay in the server's log
            return JSONResponse({"status": "degraded", "database": "unreachable"}, 503)
        inbound = inbound_state(getattr(app.state, "channels", {}))
        ok = engine_state["escalation"] == "ok" and "failing" not in inbound.values()
        body: dict[str, object] = {
            "status": "ok" if ok else "degraded",
            "database": database,
            **engine_state,
        }
        if inbound:
            body["inbound"] = inbound
        return JSONResponse(body, status_code=200 if ok else 503)

    if production:  # the schema is for the desk's own callers: signed in (R22, DESIGN's path)

        @app.get(OPENAPI, include_in_schema=False)
        async def schema(request: Request, session: SessionDep, now: NowDep) -> JSONResponse:
            """The API's OpenAPI schema, to a caller holding a token or a session; anyone else
            gets what an unknown path gets, so scanners learn nothing. No docs UI."""
            if await signed_in(request, session, now) is None:
                raise HTTPException(404)
            return JSONResponse(app.openapi())

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> PlainTextResponse:
        """Prometheus text format: lateness, outbox depth by priority, deliveries."""
        if not may_scrape(request, settings):
            raise HTTPException(404)  # what any unknown path answers
        now = utcnow()
        async with app.state.sessions() as session:
            lag = await sweep_lag(session, now)
            text = await metrics.render(session, now, lag)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # The desk API first: routes are tried in order on every request, and its callers are
    # machines (external desks, integrations polling the queue) where the dashboard's are people.
    # No dashboard path starts with /api/v1, so the order changes no match.
    install(app)  # the desk API; no-store and security headers on every answer; size limits
    openapi.install(app)  # its document names how to sign in and what a refusal is
    for pages in PAGES:  # the responders' pages at /
        app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
