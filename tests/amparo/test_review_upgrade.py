"""Desk reviews written before migration 0010 stayed in clear in report_reviews until a
responder next changed them: a database dump read the confirmed act codes the triage keeps
encrypted. ``amparo db upgrade`` (and ``amparo serve`` on the embedded database, which
migrates itself) encrypts them after migrating and empties the clear columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from amparo.runtime import open_runtime
from api.app import create_app
from core.config import Settings
from core.crypto import Keyring, Vault, write_keyring
from core.db import create_engine, dispose, sessionmaker, transaction
from core.desk_reports import UNREVIEWED
from core.migrate import upgrade
from core.models import ReportReview
from core.throttle import Limits
from tests.amparo.test_cli import amparo
from tests.api.conftest import BASE, Org, make_org

OLD = {
    "verification": "possible",
    "act_codes": ["030103"],
    "intervention_type": "medical_aid",
    "intervention_status": "some_action_continuing",
}


async def old_review(engine: AsyncEngine, vault: Vault) -> Org:
    """An organisation with a report whose review was written before 0010: in clear."""
    async with transaction(sessionmaker(engine)) as s:
        org = await make_org(s, vault, "alpha")
        assert org.report is not None
        s.add(ReportReview(report_id=org.report.id, org_id=org.org.id, **OLD))
    return org


async def stored(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        rows = [
            repr(row)
            for table in ("report_reviews", "reports")
            for row in (await conn.execute(text(f"SELECT * FROM {table}"))).all()
        ]
    return "\n".join(rows)


async def through_the_api(engine: AsyncEngine, vault: Vault, org: Org) -> dict[str, Any]:
    app = create_app(Settings(), engine, vault)
    app.state.limits = Limits()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        c.headers["Authorization"] = f"Bearer {org.token}"
        (item,) = (await c.get("/api/v1/reports")).json()["items"]
    return dict(item["review"])


async def assert_encrypted(engine: AsyncEngine, vault: Vault, org: Org) -> None:
    dump = await stored(engine)
    for secret in ("030103", "medical_aid", "possible", "some_action"):
        assert secret not in dump, secret
    async with sessionmaker(engine)() as s:
        row = (await s.execute(select(ReportReview))).scalar_one()
    assert {k: getattr(row, k) for k in UNREVIEWED} == UNREVIEWED  # the clear columns: empty
    review = await through_the_api(engine, vault, org)
    assert {k: review[k] for k in OLD} == OLD


async def test_db_upgrade_encrypts_reviews_left_in_clear(db_url: str, tmp_path: Path) -> None:
    ring = Keyring.generate()
    write_keyring(tmp_path / "var" / "master.key", ring)
    vault = Vault(ring)
    engine = create_engine(db_url)
    try:
        await upgrade(engine)  # 0010 adds a column: an older review is just this row
        org = await old_review(engine, vault)
        assert "030103" in await stored(engine)
        env = {"AMPARO_DATA_DIR": str(tmp_path / "var"), "AMPARO_DATABASE_URL": db_url}
        for _ in range(2):  # again: nothing left to do, nothing lost
            result = amparo(env, "db", "upgrade")
            assert result.returncode == 0, result.stderr
            await assert_encrypted(engine, vault, org)
    finally:
        await dispose(engine)


async def test_serve_on_the_embedded_database_encrypts_them_too(tmp_path: Path) -> None:
    """``amparo serve`` (``make run``) migrates the embedded SQLite database itself, when it
    opens its runtime: the same step follows."""
    settings = Settings(data_dir=tmp_path / "var")
    async with open_runtime(settings) as rt:
        org = await old_review(rt.engine, rt.vault)
    async with open_runtime(settings) as rt:  # the next start
        await assert_encrypted(rt.engine, rt.vault, org)
