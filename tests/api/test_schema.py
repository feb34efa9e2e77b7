"""Schemathesis over the OpenAPI schema, two organisations, both backends: never a 5xx."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy.pool import NullPool

from api.app import create_app
from api.deps import COOKIE, CSRF_HEADER
from core import desk_sessions
from core.config import Settings
from core.crypto import Keyring, Vault
from core.db import create_engine, transaction
from core.models import Base
from tests.api.conftest import make_org
from tests.pg import admin

MAX_EXAMPLES = 3


@dataclass
class Fuzzed:
    app: FastAPI
    headers: dict[str, str]


async def _seed(url: str, vault: Vault) -> dict[str, str]:
    engine = create_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    app = create_app(Settings(), engine, vault)
    async with transaction(app.state.sessions) as s:
        a = await make_org(s, vault, "alpha")
        await make_org(s, vault, "bravo")
        _row, token, csrf = await desk_sessions.open_session(
            s, a.responders["admin"], datetime.now(UTC)
        )
    await engine.dispose()
    return {"Cookie": f"{COOKIE}={token}", CSRF_HEADER: csrf}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    """One seeded database per backend for the whole module (seeding per case is too slow)."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("fuzz") / "amparo.db"
        url, cluster = f"sqlite+aiosqlite:///{path}", None
    else:
        cluster = request.getfixturevalue("pg_cluster")
        name = f"t_{uuid.uuid4().hex}"
        asyncio.run(admin(cluster, f'CREATE DATABASE "{name}" TEMPLATE template0'))
        url = f"{cluster.url}/{name}"
    vault = Vault(Keyring.generate())
    headers = asyncio.run(_seed(url, vault))
    # NullPool: the ASGI test client runs the app on its own event loop.
    engine = create_engine(url, poolclass=NullPool)
    yield Fuzzed(create_app(Settings(), engine, vault), headers)
    if cluster is not None:
        asyncio.run(admin(cluster, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_it_never_answers_with_a_server_error(fuzzed: Fuzzed) -> None:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", fuzzed.app)
    # The document names the token and the cookie: made-up ones would only be refused (401);
    # every case goes with the admin's session below.
    schema.config.generation.update(with_security_parameters=False)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Logging out or changing the password would end the session the fuzzer acts with.
    operations = [op for op in operations if not op.path.startswith("/api/v1/auth/")]
    assert len(operations) > 30
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Any) -> None:
                case.call_and_validate(
                    headers=fuzzed.headers,
                    checks=[not_a_server_error, response_schema_conformance],
                )

            try:
                call()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong in this operation
