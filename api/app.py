"""The FastAPI application: desk API under /api/v1, health and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from core.config import Mode, Settings
from core.crypto import Vault
from core.db import ping, sessionmaker


def create_app(settings: Settings, engine: AsyncEngine, vault: Vault) -> FastAPI:
    production = settings.mode is Mode.production
    app = FastAPI(
        title="Amparo protection desk",
        openapi_url=None if production else "/api/v1/openapi.json",
        docs_url=None if production else "/api/v1/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessionmaker(engine)
    app.state.vault = vault

    @app.middleware("http")
    async def no_store(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """Liveness and the state of what escalation depends on."""
        try:
            await ping(engine)
            database = "ok"
        except Exception:  # any failure means "not ok"; details stay in the server's log
            database = "unreachable"
        ok = database == "ok"
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "database": database},
            status_code=200 if ok else 503,
        )

    return app
