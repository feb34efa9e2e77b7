"""PTB's calls over aiohttp keep PTB's errors: timeouts, dead connections, a full pool."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import Bot
from telegram.error import NetworkError, TimedOut

from bot.telegram import Telegram
from bot.telegram_http import AiohttpRequest
from core.crypto import Vault
from core.messages import Address, Outbound
from tests.standins.telegram_api import TelegramStandIn

TOKEN = "123456:SECRET-token-value"


def me() -> dict[str, object]:
    return {"id": 1, "is_bot": True, "first_name": "Amparo", "username": "amparo_bot"}


async def serve(handler: web.RequestHandler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/bot"


async def test_a_slow_answer_is_timed_out_and_a_patient_call_gets_it() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.json_response({"ok": True, "result": me()})

    runner, url = await serve(slow)
    try:
        async with Bot(TOKEN, base_url=url, request=AiohttpRequest(read_timeout=2.0)) as bot:
            with pytest.raises(TimedOut) as raised:
                await bot.get_me(read_timeout=0.1)
            chain = [raised.value, raised.value.__cause__, raised.value.__context__]
            assert not any(TOKEN in str(e) for e in chain if e is not None)
            assert raised.value.__cause__ is None and raised.value.__suppress_context__
            assert (await bot.get_me()).username == "amparo_bot"
    finally:
        await runner.cleanup()


async def test_a_refused_connection_is_a_network_error_that_does_not_name_the_token() -> None:
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    request = AiohttpRequest()
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as raised:
            await request.post(f"http://127.0.0.1:{port}/bot{TOKEN}/getMe")
        assert not isinstance(raised.value, TimedOut)
        assert "SECRET" not in str(raised.value) and raised.value.__cause__ is None
    finally:
        await request.shutdown()


async def test_more_calls_than_connections_wait_their_turn() -> None:
    open_now = most = 0

    async def counted(request: web.Request) -> web.Response:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        await asyncio.sleep(0.02)
        open_now -= 1
        return web.json_response({"ok": True, "result": me()})

    runner, url = await serve(counted)
    try:
        async with Bot(TOKEN, base_url=url, request=AiohttpRequest(connections=2)) as bot:
            answers = await asyncio.gather(*(bot.get_me() for _ in range(40)))
        assert len(answers) == 40 and most == 2
    finally:
        await runner.cleanup()


async def test_a_channel_sends_without_running_as_amparo_worker_does(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """`amparo worker` delivers through the channel but never runs its inbound side (which
    opens the bot): the first send opens the connections, ``close`` closes them."""
    api = TelegramStandIn()
    await api.start()
    try:
        channel = Telegram(token=api.token, api_url=api.base_url, sessions=sessions, vault=vault)
        sent = await channel.send(Address("telegram", "5"), Outbound("are you safe?"))
        await channel.close()
        assert sent.message_id and [c["text"] for c in api.sent()] == ["are you safe?"]
    finally:
        await api.stop()
