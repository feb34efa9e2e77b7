"""PTB's network layer on aiohttp (bot/telegram_http.py), with the real PTB Bot against the Bot
API stand-in and against servers that misbehave: what PTB's own layer would do, byte for byte
where it matters, and no bot token in any error text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from telegram import Bot
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TimedOut

import bot.telegram  # noqa: F401  (PTB_TIMEDELTA, as the channel sets it)
from bot.telegram_http import AiohttpRequest
from tests.standins.telegram_api import TelegramStandIn


@pytest.fixture
async def api() -> AsyncIterator[TelegramStandIn]:
    stand_in = TelegramStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def bot_for(base_url: str, token: str, request: AiohttpRequest | None = None) -> Bot:
    file_url = base_url[: -len("/bot")] + "/file/bot"
    return Bot(token, base_url=base_url, base_file_url=file_url, request=request)


async def test_form_parameters_and_an_upload_arrive_as_telegram_reads_them(
    api: TelegramStandIn,
) -> None:
    async with bot_for(api.base_url, api.token, AiohttpRequest()) as bot:
        sent = await bot.send_message(4242, "Olá, ça va? مرحبا", disable_notification=True)
        await bot.send_document(4242, b"%PDF-1.7 report", filename="report.pdf", caption="r")
    assert sent.text == "Olá, ça va? مرحبا" and sent.chat.id == 4242
    (message,) = api.sent()
    assert message["disable_notification"] is True
    (upload,) = api.sent("sendDocument")
    assert upload["caption"] == "r" and upload["document"]["filename"] == "report.pdf"
    assert upload["document"]["data"] == b"%PDF-1.7 report"


async def test_error_answers_become_ptbs_own_exceptions(api: TelegramStandIn) -> None:
    api.fail_next("sendMessage", 429, "Too Many Requests: retry after 7", {"retry_after": 7})
    api.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    api.fail_next("sendMessage", 400, "Bad Request: upgraded", {"migrate_to_chat_id": -100123})
    api.fail_next("sendMessage", 400, "Bad Request: chat not found")
    api.fail_next("sendMessage", 502, "Bad Gateway")
    async with bot_for(api.base_url, api.token, AiohttpRequest()) as bot:
        with pytest.raises(RetryAfter) as limited:
            await bot.send_message(1, "x")
        assert limited.value.retry_after.total_seconds() == 7  # type: ignore[union-attr]
        with pytest.raises(Forbidden):
            await bot.send_message(1, "x")
        with pytest.raises(ChatMigrated) as moved:
            await bot.send_message(1, "x")
        assert moved.value.new_chat_id == -100123
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.send_message(1, "x")
        with pytest.raises(NetworkError, match="Bad Gateway"):
            await bot.send_message(1, "x")
        assert (await bot.send_message(1, "after the storm")).text == "after the storm"


async def test_long_polling_waits_past_the_read_timeout(api: TelegramStandIn) -> None:
    async with bot_for(api.base_url, api.token, AiohttpRequest(read_timeout=0.2)) as bot:
        started = time.monotonic()
        assert await bot.get_updates(timeout=1) == ()  # PTB adds the poll's own timeout
        assert time.monotonic() - started >= 0.9
        api.send_text(7, "hello")
        (update,) = await bot.get_updates(timeout=1)
    assert update.message is not None and update.message.text == "hello"


async def test_files_are_downloaded(api: TelegramStandIn) -> None:
    api.send_photo(7, b"\xff\xd8jpeg bytes", file_id="p1")
    async with bot_for(api.base_url, api.token, AiohttpRequest()) as bot:
        file = await bot.get_file("p1")
        assert bytes(await file.download_as_bytearray()) == b"\xff\xd8jpeg bytes"


async def test_a_silent_server_times_out_and_a_closed_port_fails_without_the_token() -> None:
    async def silent(_request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", silent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    token = "123456:SECRET-token-never-in-an-error"
    slow, refused = AiohttpRequest(read_timeout=0.3), AiohttpRequest(connect_timeout=1)
    try:
        with pytest.raises(TimedOut):
            await bot_for(f"http://127.0.0.1:{port}/bot", token, slow).initialize()  # getMe
        await runner.cleanup()
        with pytest.raises(NetworkError) as failed:
            await bot_for(f"http://127.0.0.1:{port}/bot", token, refused).initialize()
    finally:
        await runner.cleanup()
        await slow.shutdown()
        await refused.shutdown()
    assert not isinstance(failed.value, TimedOut)
    text = f"{failed.value} {failed.value.__cause__!r} {failed.value.__context__!r}"
    assert "SECRET" not in text and "aiohttp.Client" in str(failed.value)


async def test_the_proxy_in_the_environment_is_used(
    api: TelegramStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Operators behind a filtering network reach Telegram through HTTP(S)_PROXY, as with PTB's
    own layer. Here the stand-in plays the proxy: the API's host does not even resolve."""
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", api.base_url.rsplit("/", 1)[0])
    unreachable = "http://api.telegram.invalid/bot"
    async with bot_for(unreachable, api.token, AiohttpRequest()) as bot:
        assert (await bot.send_message(5, "via the proxy")).text == "via the proxy"
    assert api.sent()[0]["text"] == "via the proxy"
