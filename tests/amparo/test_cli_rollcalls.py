"""``amparo broadcast send`` and ``amparo rollcall start|show|close`` as an operator runs them
(real processes, both backends): the messages queued, the answers by handle and never an
address, the audit entries by "cli", and one-line errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core import rollcalls
from core.accounts import find_org
from core.crypto import Vault, load_keyring
from core.db import create_engine, sessionmaker, transaction
from core.models import AuditEntry, Broadcast, Defender, DefenderStatus, OutboxMessage, utcnow
from tests.amparo.test_cli import PASSPHRASE, amparo, assert_one_line_error
from tests.engine.conftest import address

TEXT = "Raid last night. Everyone check in now."
PHONE = "+50255501234"


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> dict[str, str]:
    return {"AMPARO_DATA_DIR": str(tmp_path / "var"), "AMPARO_DATABASE_URL": db_url}


async def test_it_broadcasts_and_runs_a_rollcall_from_the_terminal(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    assert amparo(env, "db", "upgrade").returncode == 0
    for name in ("Alpha Desk", "Bravo Desk"):
        made = amparo(env, "org", "create", name, stdin=PASSPHRASE + "\n")
        assert made.returncode == 0, made.stderr
    vault = Vault(load_keyring(tmp_path / "var" / "master.key"))
    engine = create_engine(db_url)
    sessions = sessionmaker(engine)
    try:
        async with transaction(sessions) as s:
            alpha = await find_org(s, "Alpha Desk")
            handles = []
            for i, channel in enumerate(("telegram", "signal")):
                d = Defender(
                    id=uuid.uuid4(),
                    org_id=alpha.id,
                    handle=f"calm-heron-{i}",
                    status=DefenderStatus.active,
                )
                s.add(d)
                await s.flush()
                s.add(address(vault, channel, f"{PHONE}{i}", defender_id=d.id))
                handles.append(d)

        sent = amparo(env, "broadcast", "send", "--org", "Alpha Desk", "Stay home", "--json")
        assert sent.returncode == 0, sent.stderr
        broadcast = json.loads(sent.stdout)
        assert broadcast["recipients"] == 2
        plain = amparo(env, "broadcast", "send", "--org", "Alpha Desk", "Stay home again")
        assert plain.stdout.strip().endswith("queued for 2 defenders"), plain.stdout

        started = amparo(
            env, "rollcall", "start", "--org", "Alpha Desk", "--closes-in", "30", TEXT, "--json"
        )
        assert started.returncode == 0, started.stderr
        rid = uuid.UUID(json.loads(started.stdout)["id"])
        async with transaction(sessions) as s:
            await rollcalls.answer(
                s, rollcall_id=rid, defender_id=handles[0].id, said="help", now=utcnow()
            )

        shown = amparo(env, "rollcall", "show", str(rid), "--org", "Alpha Desk")
        assert shown.returncode == 0, shown.stderr
        assert TEXT in shown.stdout and "0 safe, 1 need help, 1 not answered" in shown.stdout
        assert "calm-heron-0: needs help" in shown.stdout
        assert "calm-heron-1: not answered" in shown.stdout
        data = json.loads(
            amparo(env, "rollcall", "show", str(rid), "--org", "Alpha Desk", "--json").stdout
        )
        assert data["open"] is True and {a["handle"] for a in data["answers"]} == {
            "calm-heron-0",
            "calm-heron-1",
        }
        assert PHONE not in shown.stdout + json.dumps(data)

        foreign = amparo(env, "rollcall", "close", str(rid), "--org", "Bravo Desk")
        assert_one_line_error(foreign, f"no roll-call {rid} in Bravo Desk")
        closed = amparo(env, "rollcall", "close", str(rid), "--org", "Alpha Desk")
        assert closed.returncode == 0, closed.stderr
        assert "0 safe, 1 need help, 1 not answered" in closed.stdout
        again = amparo(env, "rollcall", "close", str(rid), "--org", "Alpha Desk")
        assert_one_line_error(again, "is already closed")

        for args in (
            ("broadcast", "send", "--org", "Alpha Desk", "   "),
            ("broadcast", "send", "--org", "Nowhere", "hello"),
            ("rollcall", "start", "--org", "Alpha Desk", "--closes-in", "0", TEXT),
            ("rollcall", "show", str(uuid.uuid4()), "--org", "Alpha Desk"),
        ):
            assert amparo(env, *args).returncode == 2

        async with sessions() as s:
            rows = await s.execute(
                select(AuditEntry.action, AuditEntry.actor, AuditEntry.target)
                .where(
                    AuditEntry.action.like("broadcast.%") | AuditEntry.action.like("rollcall.%")
                )
                .order_by(AuditEntry.seq)
            )
            entries = [tuple(r) for r in rows]
            count = await s.scalar(select(func.count()).select_from(Broadcast))
            queued = await s.scalar(select(func.count()).select_from(OutboxMessage))
    finally:
        await engine.dispose()
    assert entries == [
        ("broadcast.send", "cli", broadcast["id"]),
        ("broadcast.send", "cli", entries[1][2]),
        ("rollcall.start", "cli", str(rid)),
        ("rollcall.close", "cli", str(rid)),
    ]
    assert (count, queued) == (3, 6)
