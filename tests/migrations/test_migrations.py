from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from core.db import create_engine
from core.migrate import alembic_config, current_revision, head_revision, upgrade
from core.models import Base


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


async def test_it_finds_no_difference_between_migrations_and_models(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
        assert diff == []
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_it_upgrades_twice_and_downgrades_to_nothing(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        await upgrade(engine)  # idempotent: already at head
        cfg = alembic_config()

        def down(conn: Connection) -> None:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")

        async with engine.begin() as conn:
            await conn.run_sync(down)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert set(tables) <= {"alembic_version"}
    finally:
        await engine.dispose()
