"""The menu's alert button on Telegram, pressed weeks later: the real PTB against the Bot API
stand-in, through the flow engine and the outbox to the desk and the trusted contacts.

Its token is derived from the chat (core.callbacks.alert_token), stored nowhere and never
expiring: someone in danger who finds an old menu gets the alert, not "this button no longer
works". From any other chat it is a foreign token, refused politely."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import Telegram
from core import defenders, keys
from core.crypto import Vault, generate_org_keypair, load_keyring, write_keyring
from core.db import transaction
from core.dispatch import Dispatcher
from core.models import (
    Alert,
    AlertKind,
    ChannelAddress,
    Consent,
    Defender,
    DefenderStatus,
    Organisation,
    Responder,
    Role,
    TrustedContact,
)
from flows.engine import Engine
from tests.standins.telegram_api import TelegramStandIn

ANA, BEA, CONTACT, DESK = 5551001, 5551002, 5551003, 5551004  # two defenders, ana's contact
ALERT_LABEL = "Alert my contacts now"
REFUSED = "This button no longer works. Please send your answer again."
_ids = itertools.count(80_000)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def api() -> AsyncIterator[TelegramStandIn]:
    stand_in = TelegramStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def running(
    api: TelegramStandIn, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> AsyncIterator[tuple[Dispatcher, Clock]]:
    clock = Clock()
    channel = Telegram(
        token=api.token, api_url=api.base_url, sessions=sessions, vault=vault, clock=clock
    )
    engine = Engine(sessions, vault, clock=clock)
    dispatcher = Dispatcher(
        sessions, vault, {"telegram": channel}, owner="t", limits={}, clock=clock
    )
    task = asyncio.create_task(channel.run(engine.handle))
    await asyncio.wait_for(channel.ready.wait(), 10)
    yield dispatcher, clock
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _address(vault: Vault, chat: int, **owner: Any) -> ChannelAddress:
    row = ChannelAddress(
        id=uuid.uuid4(),
        channel="telegram",
        blind_index=vault.address_index("telegram", str(chat)),
        **owner,
    )
    row.put(vault, "value_enc", str(chat))
    return row


async def desk(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> dict[int, uuid.UUID]:
    """Two defenders (ANA, BEA), ANA's confirmed trusted contact, a responder on duty: each
    reached in their own Telegram chat. The defenders' ids by chat."""
    ids = {}
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk", public_key=generate_org_keypair()[0])
        s.add(org)
        await s.flush()
        for chat, handle in ((ANA, "calm-otter-7"), (BEA, "bold-lynx-3")):
            defender = Defender(
                id=uuid.uuid4(),
                org_id=org.id,
                handle=handle,
                locale="en",
                status=DefenderStatus.active,
            )
            s.add(defender)
            await s.flush()
            s.add(_address(vault, chat, defender_id=defender.id))
            ids[chat] = defender.id
        contact_at = _address(vault, CONTACT)
        s.add(contact_at)
        await s.flush()
        s.add(
            TrustedContact(
                id=uuid.uuid4(),
                defender_id=ids[ANA],
                consent=Consent.confirmed,
                address_id=contact_at.id,
            )
        )
        responder = Responder(
            id=uuid.uuid4(),
            org_id=org.id,
            username="ana-desk",
            role=Role.responder,
            password_hash="x",
            on_duty=True,
        )
        s.add(responder)
        await s.flush()
        s.add(_address(vault, DESK, responder_id=responder.id))
    return ids


def said_to(api: TelegramStandIn, chat: int) -> list[dict[str, Any]]:
    return [m for m in api.sent() if int(m["chat_id"]) == chat]


def answers(api: TelegramStandIn) -> list[str]:
    """What each press was answered (its popup; "" for none)."""
    return [a.get("text") or "" for a in api.sent("answerCallbackQuery")]


async def until(dispatcher: Dispatcher, clock: Clock, done: Callable[[], object]) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await dispatcher.drain(clock.now)
        await asyncio.sleep(0.02)


async def settle(dispatcher: Dispatcher, clock: Clock) -> None:
    """Long enough for a press to have been handled, and anything it queued sent."""
    for _ in range(15):
        await dispatcher.drain(clock.now)
        await asyncio.sleep(0.02)


async def menu(api: TelegramStandIn, dispatcher: Dispatcher, clock: Clock, chat: int) -> str:
    """The menu, asked for in ``chat``: its alert button's callback data."""
    before = len(said_to(api, chat))
    api.send_text(chat, "/menu")
    await until(dispatcher, clock, lambda: len(said_to(api, chat)) > before)
    rows = said_to(api, chat)[-1]["reply_markup"]["inline_keyboard"]
    (data,) = [b["callback_data"] for row in rows for b in row if b["text"] == ALERT_LABEL]
    assert "panic" not in data and len(data.encode()) <= 64
    return str(data)


def press_old(api: TelegramStandIn, chat: int, data: str) -> None:
    """A press on a menu too old for Telegram to show the bot: the message comes as an
    InaccessibleMessage (date 0, no content), its chat still named."""
    api.push(
        "callback_query",
        {
            "id": f"cbq{next(_ids)}",
            "chat_instance": f"ci-{chat}",
            "from": {"id": chat, "is_bot": False, "first_name": "D", "language_code": "en"},
            "data": data,
            "message": {
                "message_id": next(_ids),
                "date": 0,
                "chat": {"id": chat, "type": "private"},
            },
        },
    )


async def alerts_of(
    sessions: async_sessionmaker[AsyncSession], defender_id: uuid.UUID
) -> list[Alert]:
    async with sessions() as s:
        found = await s.execute(select(Alert).where(Alert.defender_id == defender_id))
        return list(found.scalars())


async def test_an_alert_button_weeks_old_raises_the_alert_from_its_own_chat_only(
    api: TelegramStandIn,
    running: tuple[Dispatcher, Clock],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    dispatcher, clock = running
    ids = await desk(sessions, vault)
    token = await menu(api, dispatcher, clock, ANA)
    assert await menu(api, dispatcher, clock, BEA) != token  # another chat's is another
    clock.now += timedelta(days=45)  # past the 30 days a stored alert button lasted

    press_old(api, BEA, token)  # ANA's button, pressed in another defender's chat
    await until(dispatcher, clock, lambda: answers(api))
    await settle(dispatcher, clock)
    assert answers(api) == [REFUSED]
    assert await alerts_of(sessions, ids[BEA]) == [] and await alerts_of(sessions, ids[ANA]) == []
    assert not said_to(api, DESK) and not said_to(api, CONTACT)

    press_old(api, ANA, token)
    await until(dispatcher, clock, lambda: said_to(api, DESK) and said_to(api, CONTACT))
    assert answers(api) == [REFUSED, ""]  # no popup: the alert is under way
    (alert,) = await alerts_of(sessions, ids[ANA])
    assert alert.kind is AlertKind.panic and alert.open_key is not None
    assert not alert.do_not_contact
    assert said_to(api, DESK)[0]["text"].startswith("EMERGENCY: calm-otter-7")
    await until(
        dispatcher, clock, lambda: any("Alert sent." in m["text"] for m in said_to(api, ANA))
    )
    assert await menu(api, dispatcher, clock, ANA) == token  # the same on every menu there


async def test_an_old_alert_button_pressed_twice_opens_one_alert(
    api: TelegramStandIn,
    running: tuple[Dispatcher, Clock],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    dispatcher, clock = running
    ids = await desk(sessions, vault)
    token = await menu(api, dispatcher, clock, ANA)
    clock.now += timedelta(days=31)
    press_old(api, ANA, token)
    press_old(api, ANA, token)  # a double tap, or the same button on another old menu

    def sent() -> list[dict[str, Any]]:
        return [m for m in said_to(api, ANA) if "Alert sent." in m["text"]]

    await until(dispatcher, clock, lambda: len(sent()) == 2)  # both presses were taken
    await settle(dispatcher, clock)
    assert answers(api) == ["", ""]
    (alert,) = await alerts_of(sessions, ids[ANA])
    assert alert.open_key is not None
    emergencies = [m for m in said_to(api, DESK) if m["text"].startswith("EMERGENCY")]
    assert len(emergencies) == 1  # the second press is on the alert's timeline, not a new one


async def test_an_old_alert_button_after_a_deletion_raises_nothing_and_after_a_forced_one_silently(
    api: TelegramStandIn,
    running: tuple[Dispatcher, Clock],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    """ANA deleted her data: her old button raises nothing. BEA's deletion was forced with the
    duress PIN (hidden): her old button raises the silent alert, as /sos typed there does, and
    her phone sees exactly what ANA's does (R8)."""
    dispatcher, clock = running
    ids = await desk(sessions, vault)
    tokens = {chat: await menu(api, dispatcher, clock, chat) for chat in (ANA, BEA)}
    async with transaction(sessions) as s:
        for chat, forget in ((ANA, defenders.delete_data), (BEA, defenders.hide)):
            found = await s.get(Defender, ids[chat])
            assert found is not None
            await forget(s, defender=found)
    clock.now += timedelta(days=31)
    api.calls.clear()
    await settle(dispatcher, clock)  # the day-old messages of both chats are deleted (R12)
    deleted = {
        chat: [
            c.params
            for c in api.calls
            if c.method == "deleteMessages" and c.params["chat_id"] == chat
        ]
        for chat in (ANA, BEA)
    }
    assert deleted[ANA] and len(deleted[ANA]) == len(deleted[BEA])  # forced or not, alike
    api.calls.clear()

    press_old(api, ANA, tokens[ANA])
    await until(dispatcher, clock, lambda: answers(api))
    await settle(dispatcher, clock)
    assert await alerts_of(sessions, ids[ANA]) == []
    assert not said_to(api, DESK) and not said_to(api, CONTACT)
    seen_by_ana = [(c.method, c.params.get("text")) for c in api.calls if c.method != "getUpdates"]
    api.calls.clear()

    press_old(api, BEA, tokens[BEA])
    await until(dispatcher, clock, lambda: said_to(api, DESK))
    await settle(dispatcher, clock)
    (alert,) = await alerts_of(sessions, ids[BEA])
    assert alert.kind is AlertKind.panic and alert.do_not_contact  # silent: phone not told
    seen_by_bea = [
        (c.method, c.params.get("text"))
        for c in api.calls
        if c.method != "getUpdates" and int(c.params.get("chat_id", BEA)) == BEA
    ]
    assert seen_by_bea == seen_by_ana and seen_by_ana


async def test_an_alert_button_still_raises_the_alert_after_the_address_key_is_rotated(
    api: TelegramStandIn,
    running: tuple[Dispatcher, Clock],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    tmp_path: Path,
) -> None:
    """``amparo keys rotate-index`` (R15) gives every chat a new index: the alert button on the
    menus already in the chats must still be the alert, not "this button no longer works"
    to someone in danger. Another chat's is still refused."""
    dispatcher, clock = running
    ids = await desk(sessions, vault)
    token = await menu(api, dispatcher, clock, ANA)
    before = vault.address_index("telegram", str(ANA))
    key_file = tmp_path / "master.key"
    write_keyring(key_file, vault.keyring)
    await keys.rotate_index(sessions, key_file)
    vault.keyring = load_keyring(key_file)  # as a running process does within a second
    assert vault.address_index("telegram", str(ANA)) != before

    press_old(api, BEA, token)
    await until(dispatcher, clock, lambda: answers(api))
    press_old(api, ANA, token)
    await until(dispatcher, clock, lambda: said_to(api, DESK) and said_to(api, CONTACT))
    assert answers(api) == [REFUSED, ""]
    (alert,) = await alerts_of(sessions, ids[ANA])
    assert alert.kind is AlertKind.panic and alert.open_key is not None
    assert await alerts_of(sessions, ids[BEA]) == []
    assert await menu(api, dispatcher, clock, ANA) == token  # menus keep the same button
