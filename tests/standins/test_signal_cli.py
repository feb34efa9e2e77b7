"""The stand-in is only useful if the real signalbot 2 accepts it: prove it."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from signalbot import Config, DataMessageContext, DataMessageHandler, SendMessage, SignalBot

from tests.standins.signal_cli import SignalStandIn

ALICE = "0b1e9a63-3c57-4d3c-9d25-6f1f1d3c0a11"


@pytest.fixture
async def service() -> AsyncIterator[SignalStandIn]:
    stand_in = SignalStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


class Echo(DataMessageHandler):
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.files: list[bytes] = []

    async def handle_data_message(self, ctx: DataMessageContext) -> None:
        text = ctx.message.text or ""
        self.seen.append(text)
        for attachment in ctx.message.attachments or []:
            self.files.append(base64.b64decode(attachment.base64_content or ""))
        await ctx.send(SendMessage(text=f"echo: {text}"))


async def wait_for(condition: Callable[[], object], seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
async def bot(service: SignalStandIn) -> AsyncIterator[tuple[SignalBot, Echo]]:
    signal_bot = SignalBot(
        Config(
            phone_number=service.number,
            signal_service=service.service,
            connection_mode="http_only",
            storage={"type": "in-memory"},
        )
    )
    echo = Echo()
    signal_bot.register(echo)
    signal_bot.start(run_forever=False)
    await signal_bot.wait_until_ready()
    await asyncio.wait_for(service.connected.wait(), 10)
    yield signal_bot, echo
    await signal_bot._pipeline.stop()
    await signal_bot.close()
    logging.getLogger("signalbot").handlers.clear()  # each SignalBot adds a handler


async def test_it_delivers_and_sends_like_signal_cli(
    service: SignalStandIn, bot: tuple[SignalBot, Echo]
) -> None:
    _, echo = bot
    await service.send_text(ALICE, "hello")
    await wait_for(lambda: service.sent)
    assert echo.seen == ["hello"]
    assert service.sent[0]["message"] == "echo: hello"
    assert service.sent[0]["recipients"] == [ALICE]
    assert service.sent[0]["number"] == service.number


async def test_it_downloads_attachments_before_dispatch(
    service: SignalStandIn, bot: tuple[SignalBot, Echo]
) -> None:
    await service.send_attachment(ALICE, b"\x89PNG-bytes", "image/png", text="see")
    await wait_for(lambda: service.sent)
    assert [p for v, p, _ in service.requests if v == "GET"][0].startswith("/v1/attachments/")
    assert bot[1].seen == ["see"]
    assert bot[1].files == [b"\x89PNG-bytes"]


async def test_it_reconnects_after_an_abnormal_close(
    service: SignalStandIn, bot: tuple[SignalBot, Echo]
) -> None:
    await service.close_sockets()  # 1011: signalbot reconnects with backoff
    await service.send_text(ALICE, "while away")  # dropped, as signal-cli-rest-api does
    await asyncio.wait_for(service.connected.wait(), 15)
    await service.send_text(ALICE, "back")
    await wait_for(lambda: service.sent, 15)
    assert bot[1].seen == ["back"] and len(service.dropped) == 1
