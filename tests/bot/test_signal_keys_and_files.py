"""Signal, through the flow engine and the database (both backends), with the real signalbot
against the signal-cli stand-in: whose files are fetched (a defender's only, R16/R17)."""

# ruff: noqa: F811  (the fixtures are imported from test_signal_desk)
from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import Vault
from core.db import transaction
from core.defenders import new_address
from core.dispatch import Dispatcher
from core.models import Alert, AlertKind, Defender, DefenderStatus, Organisation
from tests.bot.test_signal_desk import NOW, dispatcher, said_to, service, until  # noqa: F401
from tests.standins.signal_cli import SignalStandIn

DEF = "3f6b2a8e-1d4c-4e0a-9a37-5c1e2b7d9f60"
STRANGER = "7c0ffee0-3c57-4d3c-9d25-6f1f1d3c0a12"
FROZEN = "this chat can only raise an alert"
PHOTO = b"\xff\xd8\xff CANARY photo"


async def a_defender(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> uuid.UUID:
    """An active defender reached on Signal at DEF."""
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk")
        s.add(org)
        await s.flush()
        defender = Defender(
            id=uuid.uuid4(), org_id=org.id, handle="calm-otter-8", status=DefenderStatus.active
        )
        s.add(defender)
        await s.flush()
        address = new_address(vault, "signal", DEF)
        address.defender_id = defender.id
        s.add(address)
    return defender.id


async def alerts_of(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[AlertKind, bool]]:
    async with sessions() as s:
        return [(a.kind, a.do_not_contact) for a in (await s.execute(select(Alert))).scalars()]


def calls(service: SignalStandIn, key: str) -> list[tuple[str, str]]:
    return [(verb, path) for verb, path, _ in service.requests if key in path]


async def test_only_a_defenders_files_are_fetched(
    service: SignalStandIn,
    dispatcher: Dispatcher,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    await a_defender(sessions, vault)
    for who, key in ((STRANGER, "theirs"), (DEF, "hers")):
        service.attachments[key] = PHOTO
        meta = {"id": key, "contentType": "image/jpeg", "size": len(PHOTO), "isVoiceNote": False}
        await service.send_text(who, "a photo", attachments=[meta])
        await until(dispatcher, lambda who=who: said_to(service, who))
    await asyncio.sleep(0.2)
    assert "If you were given a code" in said_to(service, STRANGER)[0]
    assert calls(service, "theirs") == [("DELETE", "/v1/attachments/theirs")]  # never read
    assert calls(service, "hers") == [
        ("GET", "/v1/attachments/hers"),
        ("DELETE", "/v1/attachments/hers"),
    ]
