"""Headers, no-store, CSP, request-size limits, generic 5xx, docs off in production (R22)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from core.config import Mode, Settings
from core.crypto import Vault
from tests.api.conftest import BASE, Desk


async def test_it_sends_security_headers_everywhere(desk: Desk) -> None:
    async with desk.anonymous() as c:
        answers = [await c.get("/api/v1/alerts"), await c.get("/api/v1/nowhere")]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"


async def test_it_refuses_large_requests(desk: Desk) -> None:
    async with await desk.client(desk.a, "admin") as c:
        declared = await c.post("/api/v1/policies", content=b"x" * 300_000)

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(40):
                yield b"x" * 10_000

        streamed = await c.post(
            "/api/v1/policies", content=chunks(), headers={"content-type": "application/json"}
        )
    assert (declared.status_code, streamed.status_code) == (413, 413)


async def test_it_answers_a_crash_with_a_generic_500(engine: AsyncEngine, vault: Vault) -> None:
    app: FastAPI = create_app(Settings(), engine, vault)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail 555-0100")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        answer = await c.get("/boom")
    assert answer.status_code == 500
    assert "secret" not in answer.text and "RuntimeError" not in answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert "content-security-policy" in answer.headers


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/api/v1/docs"])
async def test_it_turns_the_docs_off_in_production(
    engine: AsyncEngine, vault: Vault, path: str
) -> None:
    app = create_app(Settings(mode=Mode.production), engine, vault)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        assert (await c.get(path)).status_code == 404


async def test_it_hands_no_request_to_opentelemetry(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R26: a tracer provider set up in the process (an OpenTelemetry agent, a library) gets
    no span of the desk's requests, whose paths and timings say which alert was looked at."""
    asked: list[str] = []

    class Recording(trace.TracerProvider):  # configured, as an SDK's provider would be
        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            asked.append(str(args[0]))
            return trace.NoOpTracer()

    monkeypatch.setattr(trace, "get_tracer_provider", lambda: Recording())
    async with await desk.client(desk.a, "token") as c:
        assert (await c.get("/api/v1/alerts")).status_code == 200
    assert asked == []
    bare = FastAPI()  # the control: FastAPI's default would have traced it
    bare.get("/x")(lambda: {})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url=BASE) as c:
        assert (await c.get("/x")).status_code == 200
    assert asked == ["fastapi"]
