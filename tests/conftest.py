"""Shared fixtures: every database test runs on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.crypto import Keyring, Vault
from core.db import create_engine, dispose, sessionmaker
from core.models import Base
from tests.pg import Cluster, Reused, admin, start_cluster

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


# Databases made from a copy of the schema (``engine`` need not create it again).
_SCHEMA_MADE: set[str] = set()


async def _create_all(url: str, cluster: Cluster | None = None, name: str = "") -> None:
    if cluster is not None:
        await admin(cluster, f'CREATE DATABASE "{name}" TEMPLATE template0')
    eng = create_engine(url)
    async with eng.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await dispose(eng)  # a template database must have no connection left


def _made_once(*args: Any) -> None:
    """``_create_all`` on a loop of its own (asked for from inside a running test's loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _create_all(*args)).result()


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding the current schema, made once: a test's database is a copy
    (a file copy takes under a millisecond; creating the schema about 0.1 s)."""
    path = tmp_path_factory.mktemp("schema") / "amparo.db"
    _made_once(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_schema(pg_cluster: Cluster) -> str:
    """A PostgreSQL database holding the current schema, made once, that a test's database
    is created from (``TEMPLATE``: about 0.1 s, against 0.3 s for creating the schema)."""
    name = f"schema_{uuid.uuid4().hex}"
    _made_once(f"{pg_cluster.url}/{name}", pg_cluster, name)
    return name


@pytest.fixture(scope="session")
def pg_reused(pg_cluster: Cluster, pg_schema: str) -> Reused:
    """Databases holding the schema, emptied and reused from test to test."""
    return Reused(pg_cluster, pg_schema)


@pytest.fixture
async def db_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """An empty database on the backend under test; for a test that asks for this
    conftest's ``engine`` too, one holding the current schema already."""
    schema = "engine" in request.fixturenames and "shared_engine" not in request.fixturenames
    if backend == "sqlite":
        path = tmp_path / "amparo.db"
        url = f"sqlite+aiosqlite:///{path}"
        if schema:
            made: Path = request.getfixturevalue("sqlite_schema")
            for suffix in ("", "-wal"):  # the template was closed: no -wal, normally
                if Path(f"{made}{suffix}").exists():
                    shutil.copyfile(f"{made}{suffix}", f"{path}{suffix}")
            _SCHEMA_MADE.add(url)
        yield url
        _SCHEMA_MADE.discard(url)
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    if schema:
        reused: Reused = request.getfixturevalue("pg_reused")
        name = await reused.take()
        url = f"{cluster.url}/{name}"
        _SCHEMA_MADE.add(url)
        yield url
        _SCHEMA_MADE.discard(url)
        await reused.give_back(name)
        return
    name = f"t_{uuid.uuid4().hex}"
    await admin(cluster, f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = f"{cluster.url}/{name}"
    yield url
    await admin(cluster, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database holding the current schema."""
    eng = create_engine(db_url)
    if db_url not in _SCHEMA_MADE:
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
