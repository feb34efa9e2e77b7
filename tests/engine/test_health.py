"""/healthz and /metrics report how escalation is doing, read from the shared database."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from core import alerts, checkins
from core.config import Settings
from core.db import transaction
from core.models import AlertKind, utcnow
from tests.engine.conftest import World


def client(engine: AsyncEngine, world: World) -> httpx.AsyncClient:
    app = create_app(Settings(), engine, world.vault)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_it_is_healthy_when_nothing_is_late(engine: AsyncEngine, world: World) -> None:
    async with client(engine, world) as c:
        answer = await c.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "database": "ok",
        "escalation": "ok",
        "sweep_lag_s": 0.0,
        "oldest_pending_p0_s": 0.0,
    }


async def test_it_turns_unhealthy_when_a_p0_waits_or_the_sweep_lags(
    engine: AsyncEngine, world: World
) -> None:
    long_ago = utcnow().replace(year=2020)
    async with transaction(world.sessions) as s:  # nobody delivered this panic, nobody swept
        d = await world.defender(s)
        await alerts.raise_alert(s, world.vault, defender=d, kind=AlertKind.panic, now=long_ago)
        await checkins.arm_timer(s, defender=d, due_at=long_ago, now=long_ago)
    async with client(engine, world) as c:
        health = await c.get("/healthz")
        metrics = (await c.get("/metrics")).text
    assert health.status_code == 503
    body = health.json()
    assert body["escalation"] == "late" and body["oldest_pending_p0_s"] > 86400
    assert body["sweep_lag_s"] > 86400
    assert 'amparo_outbox_depth{priority="P0",state="pending"} 4' in metrics
    assert "# TYPE amparo_step_lateness_seconds histogram" in metrics
    assert "amparo_sweep_lag_seconds " in metrics
