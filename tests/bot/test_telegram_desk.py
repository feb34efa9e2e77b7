"""The desk's responders on Telegram, with the real PTB against the Bot API stand-in, through
the flow engine and the outbox: a linked private chat, the group, buttons pressed there."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import Telegram
from core import alerts, desk_chat, notices
from core.crypto import Vault
from core.db import transaction
from core.dispatch import Dispatcher
from core.models import (
    Alert,
    AlertKind,
    AlertState,
    Defender,
    DefenderStatus,
    Organisation,
    Responder,
    Role,
)
from flows.engine import Engine
from tests.standins.telegram_api import TelegramStandIn

RESPONDER, STRANGER, GROUP = 5550001, 5550002, -1001700000001
_ids = itertools.count(90_000)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

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
) -> AsyncIterator[tuple[Telegram, Dispatcher, Clock]]:
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
    yield channel, dispatcher, clock
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def in_group(
    api: TelegramStandIn,
    user: int,
    text: str | None = None,
    *,
    chat: int = GROUP,
    kind: str = "supergroup",
    **extra: Any,
) -> None:
    """A message in a group chat (``text=None`` and ``extra``: a service message)."""
    body: dict[str, Any] = {
        "message_id": next(_ids),
        "date": int(time.time()),
        "chat": {"id": chat, "type": kind, "title": "Desk"},
        "from": {"id": user, "is_bot": False, "first_name": "R", "language_code": "en"},
        **extra,
    }
    if text is not None:
        body["text"] = text
    if text is not None and text.startswith("/"):
        body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    api.push("message", body)


def press_in_group(api: TelegramStandIn, user: int, data: str) -> None:
    message = {
        "message_id": next(_ids),
        "date": int(time.time()),
        "chat": {"id": GROUP, "type": "supergroup", "title": "Desk"},
        "from": {"id": 123456, "is_bot": True, "first_name": "Bot"},
        "text": "…",
    }
    api.push(
        "callback_query",
        {
            "id": f"cbq{next(_ids)}",
            "chat_instance": "ci-group",
            "from": {"id": user, "is_bot": False, "first_name": "R", "language_code": "en"},
            "data": data,
            "message": message,
        },
    )


def said_to(api: TelegramStandIn, chat: int) -> list[dict[str, Any]]:
    return [m for m in api.sent() if int(m["chat_id"]) == chat]


async def until(dispatcher: Dispatcher, clock: Clock, done: Callable[[], object]) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await dispatcher.drain(clock.now)
        await asyncio.sleep(0.02)


async def desk_org(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, now: datetime
) -> tuple[Defender, str, str]:
    """An organisation with responder "ana" and a defender: the defender, her link code and
    the group's link code."""
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk")
        s.add(org)
        await s.flush()
        me = Responder(
            id=uuid.uuid4(), org_id=org.id, username="ana", role=Role.admin, password_hash="x"
        )  # an admin: only admins make group codes (the API's rule, checked again at linking)
        defender = Defender(
            id=uuid.uuid4(), org_id=org.id, handle="calm-otter-7", status=DefenderStatus.active
        )
        s.add_all([me, defender])
        await s.flush()
        code, _ = await desk_chat.responder_code(s, vault, responder=me, actor="t", now=now)
        group_code, _ = await desk_chat.group_code(
            s, vault, org_id=org.id, created_by=me.id, actor="t", now=now
        )
    return defender, code, group_code


@pytest.mark.parametrize(
    "via",
    ["command", "post"],
)
async def test_responders_link_and_act_from_the_group(
    via: str,
    api: TelegramStandIn,
    running: tuple[Telegram, Dispatcher, Clock],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    _channel, dispatcher, clock = running
    defender, code, group_code = await desk_org(sessions, vault, clock.now)

    api.send_text(RESPONDER, f"/desk {code}")
    await until(dispatcher, clock, lambda: said_to(api, RESPONDER))
    assert "now linked" in said_to(api, RESPONDER)[0]["text"]

    in_group(api, RESPONDER, "good morning, everyone")  # never read
    in_group(api, RESPONDER, f"/desk@test_bot {group_code}")
    await until(dispatcher, clock, lambda: said_to(api, GROUP))
    assert len(said_to(api, GROUP)) == 1 and "responder group" in said_to(api, GROUP)[0]["text"]

    async with transaction(sessions) as s:
        found = await s.get(Defender, defender.id)
        assert found is not None
        alert = await alerts.raise_alert(
            s, vault, defender=found, kind=AlertKind.panic, now=clock.now
        )
    short = notices.short_code(alert.id)
    await until(dispatcher, clock, lambda: len(said_to(api, GROUP)) == 2)
    assert said_to(api, GROUP)[1]["text"].startswith("EMERGENCY: calm-otter-7")
    assert len(said_to(api, RESPONDER)) == 2  # and in the responder's own chat

    if via == "command":
        in_group(api, RESPONDER, f"/ack {short}")
    else:  # the Acknowledge button under the post itself
        post = said_to(api, GROUP)[1]
        assert f"code {short}" in post["text"]
        ack = post["reply_markup"]["inline_keyboard"][0][0]
        assert ack["text"] == "Acknowledge"
        press_in_group(api, RESPONDER, ack["callback_data"])
    await until(dispatcher, clock, lambda: len(said_to(api, GROUP)) == 3)
    acked = said_to(api, GROUP)[2]
    assert acked["text"] == f"ana acknowledged alert {short} (calm-otter-7)."
    (button,) = [row[0] for row in acked["reply_markup"]["inline_keyboard"]]
    assert button["text"] == "Resolve: safe" and "desk" not in button["callback_data"]

    press_in_group(api, STRANGER, button["callback_data"])
    await until(dispatcher, clock, lambda: len(said_to(api, GROUP)) == 4)
    assert said_to(api, GROUP)[3]["text"] == "Sorry, only the desk's responders can do that."
    press_in_group(api, RESPONDER, "x" * 30)
    await until(dispatcher, clock, lambda: len(said_to(api, GROUP)) == 5)
    assert said_to(api, GROUP)[4]["text"] == "This button no longer works."
    assert (await state(sessions, alert)) is AlertState.acknowledged

    press_in_group(api, RESPONDER, button["callback_data"])  # the stranger did not spend it
    await until(dispatcher, clock, lambda: len(said_to(api, GROUP)) == 6)
    assert said_to(api, GROUP)[5]["text"] == f"ana resolved alert {short} (calm-otter-7) as safe."
    assert (await state(sessions, alert)) is AlertState.resolved
    presses = 3 if via == "command" else 4
    assert len(api.sent("answerCallbackQuery")) == presses  # every press answered at once


async def state(sessions: async_sessionmaker[AsyncSession], alert: Alert) -> AlertState:
    async with sessions() as s:
        found = await s.get(Alert, alert.id)
        assert found is not None
        return found.state
