from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from core.config import Mode, Settings
from core.crypto import Vault
from core.db import create_engine


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
    async with client(create_app(Settings(), engine, vault)) as c:
        assert (await c.get("/api/v1/openapi.json")).status_code == 200
