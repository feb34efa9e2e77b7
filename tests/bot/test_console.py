"""The console channel, alone, wired to the engine, and as ``amparo chat`` in a subprocess."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

from alembic import command
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.console import Console
from core.crypto import Vault, ensure_keyring, generate_org_keypair
from core.db import create_engine, sessionmaker, transaction
from core.defenders import create_invite
from core.dispatch import Dispatcher
from core.messages import Address, Choice, Inbound, Outbound
from core.migrate import alembic_config
from core.models import Alert, AlertKind, Base, InviteCode, Organisation, utcnow
from flows.engine import Engine


def lines(*typed: str) -> io.StringIO:
    return io.StringIO("".join(f"{t}\n" for t in typed))


async def test_it_numbers_choices_and_reads_a_number_as_that_choice() -> None:
    out = io.StringIO()
    console = Console(address="me", out=out)
    await console.send(
        Address("console", "me"),
        Outbound("Pick one", choices=(Choice("a", "Apples"), Choice("b", "Pears"))),
    )
    assert out.getvalue() == "bot: Pick one\n  1. Apples\n  2. Pears\n"
    inbound = console.parse("2")
    assert inbound is not None and inbound.choice == "b" and inbound.text is None
    assert (console.parse("7") or Inbound("", "", "", utcnow())).text == "7"
    assert (console.parse("²") or Inbound("", "", "", utcnow())).text == "²"  # not a crash


async def test_it_turns_commands_into_what_a_phone_would_send(tmp_path: Path) -> None:
    console = Console(address="me", out=io.StringIO())
    where = console.parse("/location 4.61,-74.08")
    assert where is not None and where.location is not None
    assert (where.location.latitude, where.location.longitude) == (4.61, -74.08)
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    sent = console.parse(f"/file {photo}")
    assert sent is not None and sent.attachments[0].data == b"\xff\xd8\xff"
    assert sent.attachments[0].kind == "photo"
    forwarded, edited = console.parse("/forward OK"), console.parse("/edit OK")
    assert forwarded is not None and forwarded.forwarded and forwarded.text == "OK"
    assert edited is not None and edited.edited
    assert console.parse("   ") is None and console.parse("/location nowhere") is None


async def test_it_shows_messages_for_someone_else_and_deletions() -> None:
    out = io.StringIO()
    console = Console(address="me", out=out)
    await console.send(Address("console", "sis"), Outbound("Help them", delete_message_ids=("3",)))
    assert out.getvalue() == "(message #3 deleted)\nbot → sis: Help them\n"


async def test_it_plays_a_conversation_through_the_engine(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk", public_key=generate_org_keypair()[0])
        s.add(org)
        await s.flush()
        _row, code = await create_invite(s, vault, org_id=org.id, purpose="defender", now=utcnow())
    out = io.StringIO()
    console = Console(address="me", language="fr", read=lines("hola", code, "2").readline, out=out)
    dispatcher = Dispatcher(sessions, vault, {"console": console}, owner="test")

    async def deliver() -> None:
        await dispatcher.drain(utcnow())

    console.after = deliver
    await console.run(Engine(sessions, vault).handle)
    shown = out.getvalue()
    assert shown.startswith("bot: Bonjour.")
    assert "  5. العربية" in shown and "bot: Telegram" in shown  # Español was picked: "2"


async def test_it_chats_in_a_subprocess(db_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o700)
    engine = create_engine(db_url)

    def schema(conn: Connection) -> None:
        Base.metadata.create_all(conn)
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.stamp(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(schema)
    vault = Vault(ensure_keyring(data_dir / "master.key", create=True))
    sessions = sessionmaker(engine)
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk", public_key=generate_org_keypair()[0])
        s.add(org)
        await s.flush()
        _row, code = await create_invite(s, vault, org_id=org.id, purpose="defender", now=utcnow())
    typed = [code, "1", "1", "4826", "4826", "9713", "9713", "Lima", "2", "1", "1", "1"]
    typed += ["/alert", "1", "2", "1", "9713"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
    env |= {"AMPARO_DATA_DIR": str(data_dir), "AMPARO_DATABASE_URL": db_url, "LANG": "C.UTF-8"}
    result = subprocess.run(
        [sys.executable, "-m", "amparo", "chat", "--as", "rosa", "--language", "en"],
        input="".join(f"{t}\n" for t in typed),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    assert "bot: Welcome." in shown and "You're all set." in shown
    assert "Alert sent." in shown and "Alert called off." in shown
    assert "rosa" not in result.stderr and "4826" not in result.stderr  # nothing personal logged
    async with sessions() as s:
        kinds = sorted(str(a.kind) for a in (await s.execute(select(Alert))).scalars())
    assert kinds == [AlertKind.duress, AlertKind.panic]
    # --org again: rosa is a defender already, and an unused code would stay valid for days
    for who, offered in (("rosa", False), ("newcomer", True)):
        again = subprocess.run(
            [sys.executable, "-m", "amparo", "chat", "--org", "Desk", "--as", who],
            input="",
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr
        assert ("Send this invite code to start:" in again.stdout) is offered, again.stdout
    async with sessions() as s:
        invites = (await s.execute(select(func.count()).select_from(InviteCode))).scalar_one()
    await engine.dispose()
    assert invites == 2  # rosa's first and the newcomer's
