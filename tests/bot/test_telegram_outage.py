"""A short outage of the database or of Telegram's file server loses no defender's input:
the update waits, however many tries that takes, instead of being let go as poison (R2, R27).
A button's single-use token is spent only once the flows have its press."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import telegram as module
from bot.telegram import POISON_TRIES, Telegram
from core import callbacks
from core.crypto import Vault
from core.db import create_engine, sessionmaker, transaction
from core.messages import Inbound, NotHandled
from tests.bot.test_telegram import CHAT, SECRET, api, enrol, inbox, wait_for
from tests.standins.telegram_api import TelegramStandIn

__all__ = ["api", "inbox"]  # the fixtures, shared with test_telegram
HOOK = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
REFUSED = "no longer works"


class Down:
    """Sessions on a database that cannot be reached, counting how often one was opened."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self.factory, self.opened = factory, 0

    def __call__(self) -> AsyncSession:
        self.opened += 1
        return self.factory()


@pytest.fixture
async def down(backend: str, tmp_path: Path) -> AsyncIterator[Down]:
    """The backend under test, gone: a file that cannot be opened, a port nobody listens on."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'amparo.db'}"
    else:
        url = "postgresql+asyncpg://amparo@127.0.0.1:1/amparo"
    engine = create_engine(url)
    yield Down(sessionmaker(engine))
    await engine.dispose()


@pytest.fixture
async def polling(
    api: TelegramStandIn,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    inbox: list[Inbound],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Telegram]:
    monkeypatch.setattr(module, "STALLED_S", 0.01)  # the waits between tries, shortened
    channel = Telegram(token=api.token, api_url=api.base_url, sessions=sessions, vault=vault)

    async def receive(inbound: Inbound) -> None:
        inbox.append(inbound)

    task = asyncio.create_task(channel.run(receive))
    await asyncio.wait_for(channel.ready.wait(), 10)
    yield channel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
async def hooked(
    api: TelegramStandIn,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    inbox: list[Inbound],
) -> AsyncIterator[tuple[Telegram, httpx.AsyncClient]]:
    """Webhook mode: the channel and a client posting to its route."""
    channel = Telegram(
        token=api.token,
        api_url=api.base_url,
        sessions=sessions,
        vault=vault,
        webhook_url="https://desk.example/hooks/telegram",
        webhook_secret=SECRET,
    )

    async def receive(inbound: Inbound) -> None:
        inbox.append(inbound)

    channel.inbox = receive
    app = FastAPI()
    app.add_api_route("/hooks/telegram", channel.webhook, methods=["POST"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield channel, client
    await channel.close()


async def keyboard(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, *choices: str
) -> list[str]:
    """The tokens of a keyboard sent to CHAT: by default "Yes" and "No" (stored, single use;
    an alert button's is derived from the chat, nothing stored)."""
    chat = vault.address_index("telegram", str(CHAT))
    async with transaction(sessions) as s:
        return await callbacks.issue(
            s,
            vault,
            chat=callbacks.Chat("telegram", str(CHAT), chat),
            choices=list(choices or ("yes", "no")),
            now=datetime.now(UTC),
        )


def refusals(api: TelegramStandIn) -> list[dict[str, Any]]:
    return [a for a in api.sent("answerCallbackQuery") if REFUSED in a.get("text", "")]


async def post(client: httpx.AsyncClient, update: dict[str, Any]) -> int:
    return (await client.post("/hooks/telegram", json=update, headers=HOOK)).status_code


async def test_a_press_waits_out_a_database_outage(
    api: TelegramStandIn,
    polling: Telegram,
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    down: Down,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yes, _no = await keyboard(sessions, vault)
    monkeypatch.setattr(polling, "sessions", down)
    api.press(CHAT, yes)
    await wait_for(lambda: down.opened > POISON_TRIES + 2)  # more tries than a poison gets
    assert inbox == []
    monkeypatch.setattr(polling, "sessions", sessions)  # back
    api.send_text(CHAT, "marker")
    await wait_for(lambda: any(i.text == "marker" for i in inbox))
    assert [i.choice for i in inbox] == ["yes", None], "the press was lost"
    assert refusals(api) == []


async def test_an_alert_press_needs_no_database(
    api: TelegramStandIn,
    polling: Telegram,
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    down: Down,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The alert button's token is derived from the chat: nothing to look up or spend, so
    the press reaches the flows at once, whatever the state of the database."""
    panic, _no = await keyboard(sessions, vault, "panic", "no")
    monkeypatch.setattr(polling, "sessions", down)
    api.press(CHAT, panic)
    await wait_for(lambda: inbox)
    assert [i.choice for i in inbox] == ["panic"] and down.opened == 0
    assert refusals(api) == []


async def test_a_press_waits_out_a_database_outage_by_webhook(
    api: TelegramStandIn,
    hooked: tuple[Telegram, httpx.AsyncClient],
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    down: Down,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel, client = hooked
    yes, _no = await keyboard(sessions, vault)
    update = api.press(CHAT, yes)
    monkeypatch.setattr(channel, "sessions", down)
    answers = [await post(client, update) for _ in range(POISON_TRIES + 2)]
    assert answers == [503] * (POISON_TRIES + 2)  # Telegram keeps it and sends it again
    monkeypatch.setattr(channel, "sessions", sessions)
    assert await post(client, update) == 200
    assert [i.choice for i in inbox] == ["yes"]


async def test_a_press_the_flows_could_not_take_is_still_honoured(
    api: TelegramStandIn,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    down: Down,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token is not spent by a press whose handling failed: the press comes again and
    finds it. Spending it failing after the flows took the press: it comes again too (the
    engine dedupes it). Either way the keyboard is single-use once the press is through."""
    monkeypatch.setattr(module, "STALLED_S", 0.01)
    channel = Telegram(token=api.token, api_url=api.base_url, sessions=sessions, vault=vault)
    seen: list[Inbound] = []

    async def flows(inbound: Inbound) -> None:
        seen.append(inbound)
        if len(seen) == 1:
            raise NotHandled(transient=True)  # the engine met the outage
        if len(seen) == 2:
            monkeypatch.setattr(channel, "sessions", down)  # the outage, just after

    task = asyncio.create_task(channel.run(flows))
    yes, no = await keyboard(sessions, vault)
    api.press(CHAT, yes)
    await wait_for(lambda: down.opened > POISON_TRIES + 2)
    monkeypatch.setattr(channel, "sessions", sessions)
    await wait_for(lambda: len(seen) == 3)
    api.press(CHAT, no)  # its sibling: spent with the press
    await wait_for(lambda: refusals(api))
    task.cancel()
    assert [i.choice for i in seen] == ["yes"] * 3
    assert len({i.message_id for i in seen}) == 1  # the same update: the engine dedupes it
    assert len(refusals(api)) == 1


async def test_two_presses_of_one_keyboard_at_once_count_once(
    api: TelegramStandIn,
    hooked: tuple[Telegram, httpx.AsyncClient],
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    """Webhook mode handles updates concurrently: while the flows take one press, its
    sibling (a double tap) must not pass the not-yet-spent token."""
    channel, client = hooked

    async def slow(inbound: Inbound) -> None:
        await asyncio.sleep(0.2)
        inbox.append(inbound)

    channel.inbox = slow
    yes, no = await keyboard(sessions, vault)
    answers = await asyncio.gather(
        post(client, api.press(CHAT, yes)), post(client, api.press(CHAT, no))
    )
    assert answers == [200, 200]
    assert len(inbox) == 1 and len(refusals(api)) == 1


async def test_a_defenders_photo_waits_out_a_file_server_outage(
    api: TelegramStandIn,
    polling: Telegram,
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    await enrol(sessions, vault, CHAT)
    api.fail_next("getFile", 502, "Bad Gateway", times=POISON_TRIES + 1)
    api.send_photo(CHAT, b"\xff\xd8evidence", file_id="ev")
    api.send_text(CHAT, "marker")
    await wait_for(lambda: any(i.text == "marker" for i in inbox))
    assert [c.status for c in api.calls if c.method == "getFile"][-1] == 200
    photo = inbox[0].attachments[0]
    assert photo.data == b"\xff\xd8evidence", "the photo was lost"


async def test_a_defenders_photo_waits_out_a_database_outage(
    api: TelegramStandIn,
    polling: Telegram,
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    down: Down,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether the sender is a defender (whose files are fetched) is asked of the database."""
    await enrol(sessions, vault, CHAT)
    monkeypatch.setattr(polling, "sessions", down)
    api.send_photo(CHAT, b"\xff\xd8evidence", file_id="ev")
    await wait_for(lambda: down.opened > POISON_TRIES + 2)
    monkeypatch.setattr(polling, "sessions", sessions)
    await wait_for(lambda: inbox)
    assert inbox[0].attachments[0].data == b"\xff\xd8evidence"


async def test_a_file_server_outage_is_answered_503_by_webhook(
    api: TelegramStandIn,
    hooked: tuple[Telegram, httpx.AsyncClient],
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    _channel, client = hooked
    await enrol(sessions, vault, CHAT)
    api.fail_next("getFile", 502, "Bad Gateway", times=POISON_TRIES + 1)
    update = api.send_photo(CHAT, b"\xff\xd8evidence", file_id="ev")
    answers = [await post(client, update) for _ in range(POISON_TRIES + 2)]
    assert answers == [503] * (POISON_TRIES + 1) + [200]
    assert inbox[0].attachments[0].data == b"\xff\xd8evidence"


async def test_a_file_that_never_comes_holds_nobody_back_for_long(
    api: TelegramStandIn,
    polling: Telegram,
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Updates are taken in order: a file Telegram keeps failing to hand over would hold back
    every later message (a panic too). It waits FILE_PATIENCE_S, and /healthz sees the stall
    meanwhile; then its message goes on without the file, and the rest follow."""
    monkeypatch.setattr(module, "FILE_PATIENCE_S", 0.5)
    await enrol(sessions, vault, CHAT)
    api.fail_next("getFile", 502, "Bad Gateway", times=10_000)
    api.send_photo(CHAT, b"\xff\xd8evidence", file_id="ev")
    api.send_text(CHAT, "/sos")
    await wait_for(lambda: polling.inbound_down_s() > 0)  # the stall shows
    await wait_for(lambda: any(i.text == "/sos" for i in inbox))
    photo = inbox[0].attachments[0]
    assert (photo.kind, photo.data) == ("photo", None)  # gone on without it: asked again
    assert polling.inbound_down_s() == 0.0
