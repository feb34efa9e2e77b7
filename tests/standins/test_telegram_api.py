"""The stand-in is only useful if the real python-telegram-bot accepts it: prove it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden, RetryAfter
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from tests.standins.telegram_api import TelegramStandIn


@pytest.fixture
async def api() -> AsyncIterator[TelegramStandIn]:
    stand_in = TelegramStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def build(api: TelegramStandIn) -> Application:  # type: ignore[type-arg]
    return (
        Application.builder()
        .token(api.token)
        .base_url(api.base_url)
        .base_file_url(api.base_file_url)
        .build()
    )


async def wait_for(condition: object, seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_it_serves_a_polling_bot_end_to_end(api: TelegramStandIn) -> None:
    app = build(api)
    pressed: list[str] = []

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="tok-1")]])
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, "Ready?", reply_markup=keyboard)

    async def button(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        pressed.append(str(update.callback_query.data))
        await update.callback_query.answer()

    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(button))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        api.send_text(42, "/start")
        await wait_for(lambda: api.sent())
        api.press(42, "tok-1")
        await wait_for(lambda: pressed)
        await app.updater.stop()
        await app.stop()
    methods = [c.method for c in api.calls]
    assert methods[:3] == ["getMe", "deleteWebhook", "getUpdates"]
    message = api.sent()[0]
    assert message["chat_id"] == 42 and message["text"] == "Ready?"
    assert message["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "tok-1"
    assert pressed == ["tok-1"]
    assert api.sent("answerCallbackQuery")


async def test_it_answers_with_real_error_shapes(
    api: TelegramStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")  # retry_after as a timedelta, as PTB 23 will
    app = build(api)
    async with app:
        api.fail_next("sendMessage", 429, "Too Many Requests: retry after 7", {"retry_after": 7})
        with pytest.raises(RetryAfter) as retry:
            await app.bot.send_message(42, "hi")
        assert retry.value.retry_after.total_seconds() == 7  # type: ignore[union-attr]
        api.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
        with pytest.raises(Forbidden, match="blocked"):
            await app.bot.send_message(42, "hi")
        with pytest.raises(BadRequest, match="too long"):
            await app.bot.send_message(42, "x" * 4097)
        assert (await app.bot.send_message(42, "hi")).text == "hi"


async def test_it_serves_files_by_file_id(api: TelegramStandIn) -> None:
    app = build(api)
    async with app:
        api.send_photo(42, b"\xff\xd8jpeg-bytes", file_id="p1")
        file = await app.bot.get_file("p1")
        assert file.file_size == len(b"\xff\xd8jpeg-bytes")
        assert bytes(await file.download_as_bytearray()) == b"\xff\xd8jpeg-bytes"
