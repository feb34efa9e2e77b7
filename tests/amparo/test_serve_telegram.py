"""`amparo serve` end to end: the real PTB against the Bot API stand-in, through the flows,
the database and the outbox, to the defender's chat and to the external desk's webhook."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from aiohttp import web

from core.crypto import Vault, load_keyring
from core.db import create_engine, sessionmaker, transaction
from core.defenders import create_invite
from core.models import Organisation, utcnow
from core.webhook_secrets import verify
from core.webhooks import add as add_webhook
from tests.amparo.test_serve import FAST_CHATS, free_port
from tests.logscan import leaks
from tests.standins.telegram_api import TelegramStandIn

CHAT = 7319046682


async def wait_for(condition: Callable[[], object], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def texts(api: TelegramStandIn) -> list[str]:
    return [str(m["text"]) for m in api.sent()]


async def test_it_takes_a_defender_from_invite_to_panic_at_the_desk(tmp_path: Path) -> None:
    api = TelegramStandIn()
    await api.start()
    received: list[tuple[dict[str, str], bytes]] = []

    async def desk(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    receiver = web.AppRunner(web.Application())
    receiver.app.router.add_post("/desk", desk)
    await receiver.setup()
    site = web.TCPSite(receiver, "127.0.0.1", 0)
    await site.start()
    desk_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
    env.update({"AMPARO_DATA_DIR": str(data), "LANG": "C.UTF-8", **FAST_CHATS})
    made = subprocess.run(
        [sys.executable, "-m", "amparo", "org", "create", "Desk", "--json"],
        env=env,
        input="correct horse battery staple\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    vault = Vault(load_keyring(data / "master.key"))
    engine = create_engine(f"sqlite+aiosqlite:///{data / 'amparo.db'}")
    async with transaction(sessionmaker(engine)) as session:
        org = await session.get(
            Organisation, __import__("uuid").UUID(json.loads(made.stdout)["id"])
        )
        assert org is not None
        _, code = await create_invite(
            session, vault, org_id=org.id, purpose="defender", now=utcnow()
        )
        _, secret = await add_webhook(
            session, vault, org_id=org.id, url=f"http://127.0.0.1:{desk_port}/desk"
        )
    await engine.dispose()

    port = free_port()
    env.update(
        {
            "AMPARO_PORT": str(port),
            "AMPARO_TELEGRAM_TOKEN": api.token,
            "AMPARO_TELEGRAM_API_URL": api.base_url,
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "amparo", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_for(lambda: any(c.method == "getUpdates" for c in api.calls))
        api.send_text(CHAT, code, language="es")
        await wait_for(lambda: any("idioma" in t for t in texts(api)))
        question = api.sent()[-1]
        assert "inline_keyboard" in question["reply_markup"]  # buttons carry opaque tokens
        api.send_text(CHAT, "/panic", language="es")
        await wait_for(lambda: received)
        headers, raw = received[0]
        body = json.loads(raw)
        assert body["type"] == "alert.triggered" and body["alert"]["kind"] == "panic"
        assert headers["Amparo-Event-Id"] == body["event_id"]
        assert verify(headers["Amparo-Signature"], raw, [secret.encode()], now=time.time())
        assert code not in raw.decode() and str(CHAT) not in raw.decode()
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"http://127.0.0.1:{port}/healthz")).json()
        assert health["status"] == "ok"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
        await api.stop()
        await receiver.cleanup()
    for secret_text in (api.token, code, str(CHAT), "/panic"):
        assert not leaks(secret_text, output), "the log leaked an identifier or message text"
