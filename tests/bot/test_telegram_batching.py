"""Fewer writes per Telegram message: tokens by group commit, one unblocking a batch."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import Telegram
from core import callbacks
from core.crypto import Vault
from core.db import transaction
from core.defenders import new_address
from core.dispatch import Dispatcher
from core.messages import Address, Choice, Outbound
from core.models import CallbackToken, ChannelAddress, Priority
from core.outbox import Item, enqueue_many
from tests.standins.telegram_api import TelegramStandIn

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _chat(n: int) -> callbacks.Chat:
    return callbacks.Chat("telegram", str(n), bytes([n]) * 32)


CHAT = 7319046682


@pytest.fixture
def inserts(sessions: async_sessionmaker[AsyncSession]) -> Iterator[list[str]]:
    """The INSERT statements into callback_tokens, as the driver gets them."""
    seen: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        if statement.startswith("INSERT INTO callback_tokens"):
            seen.append(statement)

    sync = sessions.kw["bind"].sync_engine
    event.listen(sync, "before_cursor_execute", count)
    yield seen
    event.remove(sync, "before_cursor_execute", count)


@pytest.fixture
async def telegram(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> AsyncIterator[tuple[TelegramStandIn, Telegram]]:
    api = TelegramStandIn()
    await api.start()
    channel = Telegram(token=api.token, api_url=api.base_url, sessions=sessions, vault=vault)
    async with channel.bot:
        yield api, channel
    await api.stop()


async def test_concurrent_sends_store_their_tokens_in_one_write(
    telegram: tuple[TelegramStandIn, Telegram],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    inserts: list[str],
) -> None:
    api, channel = telegram
    question = Outbound("Safe?", choices=(Choice("yes", "Yes"), Choice("no", "No")))
    chats = [CHAT + i for i in range(10)]
    await asyncio.gather(*(channel.send(Address("telegram", str(c)), question) for c in chats))
    assert len(inserts) <= 2  # the first send's own write, then all the others' together
    async with sessions() as s:
        stored = (await s.execute(select(CallbackToken))).scalars().all()
    assert len(stored) == 20 and len({t.keyboard for t in stored}) == 10
    sent = {m["chat_id"]: m["reply_markup"]["inline_keyboard"] for m in api.sent()}
    assert sorted(sent) == chats
    for chat in chats:  # each chat's own tokens, bound to it, single use
        token = sent[chat][1][0]["callback_data"]
        async with transaction(sessions) as s:
            other = channel.chat(chat + 100)
            assert await callbacks.redeem(s, vault, token=token, chat=other, now=NOW) is None
            mine = channel.chat(chat)
            assert await callbacks.redeem(s, vault, token=token, chat=mine, now=NOW) == "no"
            assert await callbacks.redeem(s, vault, token=token, chat=mine, now=NOW) is None


async def test_a_failed_group_write_fails_every_send_in_it_and_the_next_one_works(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issuer = callbacks.Issuer(sessions, vault)
    monkeypatch.setattr(callbacks.secrets, "token_urlsafe", lambda _n: "same-token")
    results = await asyncio.gather(
        *(issuer.issue(chat=_chat(i), choices=["a"], now=NOW) for i in range(1, 5)),
        return_exceptions=True,
    )
    # The first write (one send) succeeds; the others share one write, which collides.
    assert results[0] == ["same-token"]
    assert all(isinstance(r, RuntimeError) for r in results[1:])
    monkeypatch.undo()
    async with sessions() as s:
        assert len((await s.execute(select(CallbackToken))).scalars().all()) == 1
    tokens = await issuer.issue(chat=_chat(9), choices=["a", "b"], now=NOW)
    assert len(set(tokens)) == 2  # nothing left stuck: the next send stores its tokens


async def test_a_delivery_unblocks_the_address_and_a_refusal_blocks_it(
    telegram: tuple[TelegramStandIn, Telegram],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    api, channel = telegram
    async with transaction(sessions) as s:
        back = new_address(vault, "telegram", str(CHAT))
        back.blocked_at = NOW  # blocked the bot once, then unblocked it
        gone = new_address(vault, "telegram", str(CHAT + 1))
        s.add_all([back, gone])
        await s.flush()
        items = [
            Item("telegram", int(Priority.P2), f"t:{uuid.uuid4()}", Outbound("Hi"), address_id=a)
            for a in (back.id, gone.id)
        ]
        await enqueue_many(s, vault, items, now=NOW)
    api.blocked.add(CHAT + 1)
    dispatcher = Dispatcher(sessions, vault, {"telegram": channel}, owner="t", limits={})
    assert await dispatcher.drain(datetime.now(UTC)) == 2
    async with sessions() as s:
        rows = {a.id: a.blocked_at for a in (await s.execute(select(ChannelAddress))).scalars()}
    assert rows[back.id] is None and rows[gone.id] is not None
    assert [m["chat_id"] for m in api.sent()] == [CHAT]


async def test_a_send_cancelled_while_writing_leaves_no_unretrieved_failure(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At shutdown the dispatcher's sends are cancelled, the group's writer among them."""
    issuer = callbacks.Issuer(sessions, vault)
    writing = asyncio.Event()

    @asynccontextmanager
    async def stuck(_factory: object) -> AsyncIterator[None]:
        writing.set()
        await asyncio.sleep(60)
        yield

    monkeypatch.setattr(callbacks, "transaction", stuck)
    loop = asyncio.get_running_loop()
    logged: list[str] = []
    loop.set_exception_handler(lambda _loop, context: logged.append(context["message"]))
    try:
        task = asyncio.create_task(issuer.issue(chat=_chat(1), choices=["a"], now=NOW))
        await writing.wait()
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        del task
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert logged == []
