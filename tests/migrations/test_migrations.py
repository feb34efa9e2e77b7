from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import TextClause, Uuid, bindparam, inspect, text
from sqlalchemy.engine import Connection

from core.db import create_engine
from core.migrate import alembic_config, current_revision, head_revision, upgrade
from core.models import Base
from core.models.base import UTCDateTime


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


async def test_it_upgrades_a_database_that_holds_data(db_url: str) -> None:
    """Each migration must work on rows written under the one before it."""
    engine = create_engine(db_url)
    try:
        await upgrade(engine, "0001")
        org, defender, alert = (uuid.uuid4() for _ in range(3))
        now = datetime.now(UTC)
        types = {"id": Uuid(), "org": Uuid(), "d": Uuid(), "t": UTCDateTime()}

        def typed(sql: str) -> TextClause:
            names = [n for n in types if f":{n}" in sql]
            return text(sql).bindparams(*(bindparam(n, type_=types[n]) for n in names))

        async with engine.begin() as conn:
            await conn.execute(
                typed("INSERT INTO organisations (id, name, created_at) VALUES (:id, 'Desk', :t)"),
                {"id": org, "t": now},
            )
            await conn.execute(
                typed(
                    "INSERT INTO defenders (id, org_id, handle, locale, timezone, status, "
                    "discreet, failed_pins, created_at) "
                    "VALUES (:id, :org, 'h-1', 'en', 'UTC', 'active', false, 0, :t)"
                ),
                {"id": defender, "org": org, "t": now},
            )
            await conn.execute(
                typed(
                    "INSERT INTO alerts (id, org_id, defender_id, kind, priority, state, "
                    "dedup_key, policy_snapshot, do_not_contact, step, version, triggered_at, "
                    "created_at) VALUES (:id, :org, :d, 'panic', 0, 'triggered', 'k', '{}', "
                    "false, 0, 1, :t, :t)"
                ),
                {"id": alert, "org": org, "d": defender, "t": now},
            )
        await upgrade(engine)
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM alerts"))).scalar_one()
        assert count == 1
    finally:
        await engine.dispose()
