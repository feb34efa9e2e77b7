"""Signal, through the flow engine and the database (both backends), with the real signalbot
against the signal-cli stand-in: whose files are fetched (a defender's only, R16/R17), and a
message signal-cli could not decrypt because a defender's safety number changed (R6)."""

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


async def raised(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> list[tuple[AlertKind, bool]]:
    """The alerts, once there is one (the outbox drained meanwhile)."""
    deadline = asyncio.get_running_loop().time() + 15
    while not (found := await alerts_of(sessions)):
        assert asyncio.get_running_loop().time() < deadline, "no alert"
        await dispatcher.drain(NOW)
        await asyncio.sleep(0.02)
    return found


async def test_a_changed_key_alerts_the_desk_before_anything_from_it_is_acted_on(
    service: SignalStandIn,
    dispatcher: Dispatcher,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    """Before, nothing happened until a send to the defender was refused: the desk was not
    told, and the message (maybe an alert) waited unseen in signal-cli's cache."""
    await a_defender(sessions, vault)
    await service.send_untrusted(STRANGER)  # not a defender: nothing to alert
    await service.send_untrusted(DEF, timestamp=1735725600123)
    assert await raised(dispatcher, sessions) == [(AlertKind.identity_changed, True)]
    await dispatcher.drain(NOW)
    assert said_to(service, DEF) == [] and said_to(service, STRANGER) == []  # no reply

    # The desk trusts the new key: signal-cli offers the message again, decrypted, with its
    # own timestamp. Not a replay; but the chat is frozen until the desk resolves the alert.
    await service.send_text(DEF, "/safe", timestamp=1735725600123)
    await until(dispatcher, lambda: said_to(service, DEF))
    assert FROZEN in said_to(service, DEF)[0]
    await service.send_untrusted(DEF)  # another message from the new key: the same alert
    await service.send_text(DEF, "/help")
    await until(dispatcher, lambda: len(said_to(service, DEF)) == 2)
    assert await alerts_of(sessions) == [(AlertKind.identity_changed, True)]  # still one


async def test_an_edit_signalbot_refuses_is_answered_as_an_edit(
    service: SignalStandIn,
    dispatcher: Dispatcher,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    """An edit repeats the files of the message it edits: one without ``isVoiceNote`` makes
    signalbot's model refuse the frame. It was dropped without a word; an edit never counts
    (R3), and the defender is told, as for any edit, that edits are not read."""
    await a_defender(sessions, vault)
    meta = {"id": "edit1", "contentType": "image/jpeg", "filename": None, "size": 8}
    frame = service.envelope(DEF, {"message": "I'm safe now", "attachments": [meta]})
    envelope = frame["envelope"]
    data = envelope.pop("dataMessage")
    envelope["editMessage"] = {
        "targetSentTimestamp": data["timestamp"] - 5000,
        "dataMessage": data,
    }
    await service.push(frame)
    await until(dispatcher, lambda: said_to(service, DEF))
    assert said_to(service, DEF) == [
        "I don't read edited messages. Please send a new message instead."
    ]
    assert calls(service, "edit1") == [("DELETE", "/v1/attachments/edit1")]  # never read
    assert await alerts_of(sessions) == []
