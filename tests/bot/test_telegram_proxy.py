"""Where Telegram is filtered, operators reach it through the proxy named in the environment."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import Telegram
from core.crypto import Vault
from tests.standins.telegram_api import TelegramStandIn


async def test_the_proxy_in_the_environment_carries_the_bots_requests(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in plays the proxy: the API's own host does not even resolve."""
    api = TelegramStandIn()
    await api.start()
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", api.base_url.rsplit("/", 1)[0])
        monkeypatch.setenv("ALL_PROXY", api.base_url.rsplit("/", 1)[0])
        channel = Telegram(
            token=api.token,
            api_url="http://api.telegram.invalid/bot",
            sessions=sessions,
            vault=vault,
        )
        async with channel.bot:
            sent = await channel.bot.send_message(5, "via the proxy")
        assert sent.text == "via the proxy" and api.sent()[0]["text"] == "via the proxy"
    finally:
        await api.stop()
