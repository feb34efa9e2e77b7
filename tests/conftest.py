"""Shared fixtures: every database test runs on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.crypto import Keyring, Vault
from core.db import create_engine, dispose, sessionmaker
from core.models import Base
from tests.pg import Cluster, start_cluster

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    # PostgreSQL is never skipped silently: no binaries is an error (make test installs them).
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """An empty database on the backend under test."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'amparo.db'}"
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    name = f"t_{uuid.uuid4().hex}"
    conn = await asyncpg.connect(f"postgresql://amparo@127.0.0.1:{cluster.port}/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    yield f"{cluster.url}/{name}"
    conn = await asyncpg.connect(f"postgresql://amparo@127.0.0.1:{cluster.port}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database holding the current schema."""
    eng = create_engine(db_url)
    async with eng.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield eng
    await dispose(eng)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return sessionmaker(engine)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


@pytest.fixture
def vault(keyring: Keyring) -> Vault:
    return Vault(keyring)


@pytest.fixture(autouse=True)
def _no_amparo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's AMPARO_* variables or .env file."""
    for key in list(os.environ):
        if key.startswith("AMPARO_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `python -m amparo` a test starts runs this checkout's code, not whichever
    checkout the virtualenv's editable install points at (another worktree)."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", root + (os.pathsep + path if path else ""))
