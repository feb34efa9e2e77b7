"""The tests' reused PostgreSQL databases come back empty, or not at all: a row or a schema
change one test leaves must never reach the next."""

from __future__ import annotations

import uuid

import asyncpg

from core.db import create_engine, dispose, sessionmaker, transaction
from core.models import Defender, DefenderStatus, Organisation
from tests.pg import Cluster, Reused


async def test_a_database_is_handed_on_empty_and_one_changed_is_dropped(
    pg_cluster: Cluster, pg_schema: str
) -> None:
    pool = Reused(pg_cluster, pg_schema)
    name = await pool.take()
    engine = create_engine(f"{pg_cluster.url}/{name}")
    async with transaction(sessionmaker(engine)) as s:  # a row another points to
        org = Organisation(id=uuid.uuid4(), name="Alpha")
        s.add(org)
        await s.flush()
        s.add(Defender(id=uuid.uuid4(), org_id=org.id, handle="h", status=DefenderStatus.active))
    url = f"postgresql://amparo@127.0.0.1:{pg_cluster.port}"
    left_open = await asyncpg.connect(f"{url}/{name}")  # a test that forgot to close it
    await left_open.execute("BEGIN; LOCK TABLE organisations")
    await pool.give_back(name)  # the engine's pooled connection is still open too
    await dispose(engine)
    left_open.terminate()
    assert pool.free == [name]

    again = await pool.take()
    assert again == name
    conn = await asyncpg.connect(f"{url}/{again}")
    for table in ("organisations", "defenders"):
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
    await conn.execute("ALTER TABLE organisations ADD COLUMN extra text")
    await conn.close()
    await pool.give_back(again)
    assert pool.free == []
    gone = await asyncpg.connect(f"{url}/postgres")
    try:
        found = await gone.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await gone.close()
    assert found == 0
