"""serve mounts Telegram's webhook route only in webhook mode, guarded by the secret."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from amparo.inbound import mount_webhooks
from api.app import create_app
from bot.telegram import Telegram
from core.config import Settings
from core.crypto import Vault
from core.db import sessionmaker
from core.messages import Channel

SECRET = "k" * 40


def app_with(engine: AsyncEngine, vault: Vault, channel: Channel) -> httpx.AsyncClient:
    app = create_app(Settings(), engine, vault)
    mount_webhooks(app, {"telegram": channel})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_it_mounts_the_guarded_route_in_webhook_mode(
    engine: AsyncEngine, vault: Vault
) -> None:
    hooked = Telegram(
        token="1:x",
        api_url="http://127.0.0.1:9/bot",
        sessions=sessionmaker(engine),
        vault=vault,
        webhook_url="https://d.example/hooks/telegram",
        webhook_secret=SECRET,
    )
    async with app_with(engine, vault, hooked) as client:
        answer = await client.post(
            "/hooks/telegram",
            json={"update_id": 1},
            headers={"X-Telegram-Bot-Api-Secret-Token": "nope"},
        )
        assert answer.status_code == 401
        schema = (await client.get("/api/v1/openapi.json")).json()
        assert "/hooks/telegram" not in schema["paths"]


async def test_it_has_no_route_when_polling(engine: AsyncEngine, vault: Vault) -> None:
    polling = Telegram(
        token="1:x", api_url="http://127.0.0.1:9/bot", sessions=sessionmaker(engine), vault=vault
    )
    async with app_with(engine, vault, polling) as client:
        answer = await client.post(
            "/hooks/telegram",
            json={"update_id": 1},
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
        assert answer.status_code in (404, 405)
