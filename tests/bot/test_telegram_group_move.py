"""A responder group that Telegram upgrades to a supergroup (a new chat id) stays the desk's
group, whether the bot hears the service message first or a send is refused with the new id."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import Telegram
from core import alerts, desk_chat, notices
from core.crypto import Vault
from core.db import transaction
from core.dispatch import Dispatcher
from core.models import AlertKind, Defender, DefenderStatus, Organisation, Responder, Role
from tests.bot import test_telegram_desk as desk
from tests.bot.test_telegram_desk import GROUP, RESPONDER, Clock, in_group, said_to, until
from tests.standins.telegram_api import TelegramStandIn

SUPERGROUP = -1009876543210
api, running = desk.api, desk.running  # the same fixtures: a stand-in, PTB, engine, outbox
Running = tuple[Telegram, Dispatcher, Clock]


async def linked(
    api: TelegramStandIn,
    running: Running,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> Defender:
    """An organisation whose responder linked her chat and the group; its defender."""
    _channel, dispatcher, clock = running
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk")
        s.add(org)
        await s.flush()
        me = Responder(
            id=uuid.uuid4(), org_id=org.id, username="ana", role=Role.responder, password_hash="x"
        )
        defender = Defender(
            id=uuid.uuid4(), org_id=org.id, handle="calm-otter-7", status=DefenderStatus.active
        )
        s.add_all([me, defender])
        await s.flush()
        code, _ = await desk_chat.responder_code(s, vault, responder=me, actor="t", now=clock.now)
        group_code, _ = await desk_chat.group_code(
            s, vault, org_id=org.id, created_by=me.id, actor="t", now=clock.now
        )
    api.send_text(RESPONDER, f"/desk {code}")
    in_group(api, RESPONDER, f"/desk {group_code}")
    await until(dispatcher, clock, lambda: said_to(api, GROUP) and said_to(api, RESPONDER))
    return defender


async def raise_alert(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    defender: Defender,
    clock: Clock,
) -> str:
    async with transaction(sessions) as s:
        found = await s.get(Defender, defender.id)
        assert found is not None
        alert = await alerts.raise_alert(
            s, vault, defender=found, kind=AlertKind.panic, now=clock.now
        )
    return notices.short_code(alert.id)


def service_message(api: TelegramStandIn, **body: Any) -> None:
    """What Telegram posts in the old group when it becomes a supergroup."""
    api.push(
        "message",
        {
            "message_id": 77,
            "date": int(time.time()),
            "chat": {"id": GROUP, "type": "group", "title": "Desk"},
            "from": {"id": RESPONDER, "is_bot": False, "first_name": "R"},
            **body,
        },
    )


async def test_the_service_message_moves_the_group(
    api: TelegramStandIn,
    running: Running,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    _channel, dispatcher, clock = running
    defender = await linked(api, running, sessions, vault)
    service_message(api, migrate_to_chat_id=SUPERGROUP)
    in_group_of(api, SUPERGROUP, "/ack ZZZZZZ")  # answered only in the desk's group
    await until(dispatcher, clock, lambda: said_to(api, SUPERGROUP))
    assert said_to(api, SUPERGROUP)[0]["text"] == "No open alert has that code."
    short = await raise_alert(sessions, vault, defender, clock)
    await until(dispatcher, clock, lambda: len(said_to(api, SUPERGROUP)) == 2)
    assert said_to(api, SUPERGROUP)[1]["text"].startswith("EMERGENCY: calm-otter-7")
    assert len(said_to(api, GROUP)) == 1  # only the link's confirmation, before the move
    in_group_of(api, SUPERGROUP, f"/ack {short}")
    await until(dispatcher, clock, lambda: len(said_to(api, SUPERGROUP)) == 3)
    assert said_to(api, SUPERGROUP)[2]["text"].startswith(f"ana acknowledged alert {short}")


async def test_another_groups_move_is_ignored(
    api: TelegramStandIn,
    running: Running,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    _channel, dispatcher, clock = running
    await linked(api, running, sessions, vault)
    api.push(
        "message",
        {
            "message_id": 79,
            "date": int(time.time()),
            "chat": {"id": -4242, "type": "group", "title": "Other"},
            "from": {"id": RESPONDER, "is_bot": False, "first_name": "R"},
            "migrate_to_chat_id": SUPERGROUP,
        },
    )
    in_group_of(api, SUPERGROUP, "/ack ZZZZZZ")  # not our group: never answered
    in_group(api, RESPONDER, "/ack ZZZZZZ")  # still ours
    await until(dispatcher, clock, lambda: len(said_to(api, GROUP)) == 2)
    assert said_to(api, GROUP)[1]["text"] == "No open alert has that code."
    assert said_to(api, SUPERGROUP) == []


def in_group_of(api: TelegramStandIn, chat: int, text: str) -> None:
    api.push(
        "message",
        {
            "message_id": 78,
            "date": int(time.time()),
            "chat": {"id": chat, "type": "supergroup", "title": "Desk"},
            "from": {"id": RESPONDER, "is_bot": False, "first_name": "R", "language_code": "en"},
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": 4}],
        },
    )


async def test_a_send_refused_with_the_new_id_goes_there_and_so_do_the_next(
    api: TelegramStandIn,
    running: Running,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    _channel, dispatcher, clock = running
    defender = await linked(api, running, sessions, vault)
    api.fail_next(
        "sendMessage",
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        {"migrate_to_chat_id": SUPERGROUP},
        chat_id=GROUP,
    )
    short = await raise_alert(sessions, vault, defender, clock)
    await until(dispatcher, clock, lambda: said_to(api, SUPERGROUP))
    assert said_to(api, SUPERGROUP)[0]["text"].startswith("EMERGENCY: calm-otter-7")
    # the group's link moved with it: it is the desk's group under the new id
    in_group_of(api, SUPERGROUP, f"/ack {short}")
    await until(dispatcher, clock, lambda: len(said_to(api, SUPERGROUP)) == 2)
    assert said_to(api, SUPERGROUP)[1]["text"].startswith(f"ana acknowledged alert {short}")
    to_old = [c for c in api.calls if c.method == "sendMessage" and c.params["chat_id"] == GROUP]
    assert [c.status for c in to_old] == [200, 400]  # the link's confirmation, then the refusal
