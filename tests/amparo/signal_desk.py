"""A desk for `amparo serve` end-to-end tests on Signal: a data directory with an organisation
(key under a passphrase), a fast escalation policy, a webhook receiver, a responder on duty
reachable on Signal then Telegram; the Signal and Telegram stand-ins; the serve process.

``Phone`` plays a person on Signal: it sends through the stand-in and waits for the bot's
answer, and picks numbered options by their label as a person reading the screen would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from core.crypto import Vault, load_keyring
from core.db import create_engine, sessionmaker, transaction
from core.defenders import create_invite, new_address
from core.models import EscalationPolicy, Responder, Role, utcnow
from core.webhooks import add as add_webhook
from tests.amparo.test_serve import FAST_CHATS, free_port
from tests.standins.signal_cli import SignalStandIn
from tests.standins.telegram_api import TelegramStandIn

PASSPHRASE = "correct horse battery staple"
RESPONDER_SIGNAL = "5d0c7f7e-8f55-4a55-9b53-2f0b6a1d7c42"
RESPONDER_CHAT = 8120455120
# Every step at once, so a missed check-in reaches the desk within a sweep or two.
FAST = {"pre_reminder_s": None, "grace_s": 0, "desk_after_s": 0, "repeat_s": 600}


async def wait_for(condition: Callable[[], object], seconds: float = 40) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@dataclass
class Phone:
    service: SignalStandIn
    uuid: str

    def seen(self) -> list[str]:
        return self.service.messages_to(self.uuid)

    async def say(self, text: str) -> str:
        before = len(self.seen())
        await self.service.send_text(self.uuid, text)
        await wait_for(lambda: len(self.seen()) > before)
        return self.seen()[-1]

    async def send_file(self, data: bytes, content_type: str) -> str:
        before = len(self.seen())
        await self.service.send_attachment(self.uuid, data, content_type)
        await wait_for(lambda: len(self.seen()) > before)
        return self.seen()[-1]

    async def pick(self, label: str) -> str:
        """Answer the last question with the number of the option called ``label``."""
        options = re.findall(r"^(\d+)\. (.+)$", self.seen()[-1], re.MULTILINE)
        numbers = [n for n, shown in options if shown == label]
        assert numbers, (label, options)
        return await self.say(numbers[0])


@dataclass
class SignalDesk:
    tmp: Path
    signal: SignalStandIn = field(default_factory=SignalStandIn)
    telegram: TelegramStandIn = field(default_factory=TelegramStandIn)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)  # invite codes given out (never logged)
    env: dict[str, str] = field(default_factory=dict)
    org_id: uuid.UUID | None = None
    vault: Vault | None = None
    output: str = ""
    database_url: str | None = None  # None: the embedded SQLite under the data dir
    _receiver: web.AppRunner | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.tmp / "var"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data / 'amparo.db'}"

    async def start(self) -> None:
        await self.signal.start()
        await self.telegram.start()
        desk_port = await self._start_receiver()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
        self.env.update({"AMPARO_DATA_DIR": str(self.data), "LANG": "C.UTF-8", **FAST_CHATS})
        if self.database_url is not None:  # PostgreSQL is upgraded by the operator
            self.env["AMPARO_DATABASE_URL"] = self.database_url
            upgraded = subprocess.run(
                [sys.executable, "-m", "amparo", "db", "upgrade"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert upgraded.returncode == 0, upgraded.stderr
        made = subprocess.run(
            [sys.executable, "-m", "amparo", "org", "create", "Desk", "--json"],
            env=self.env,
            input=PASSPHRASE + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        self.org_id = uuid.UUID(json.loads(made.stdout)["id"])
        self.vault = Vault(load_keyring(self.data / "master.key"))
        engine = create_engine(self.db_url)
        async with transaction(sessionmaker(engine)) as s:
            await add_webhook(
                s, self.vault, org_id=self.org_id, url=f"http://127.0.0.1:{desk_port}/desk"
            )
            s.add(EscalationPolicy(org_id=self.org_id, name="fast", steps=FAST, is_default=True))
            responder = Responder(
                id=uuid.uuid4(),
                org_id=self.org_id,
                username="ana",
                role=Role.responder,
                password_hash="-",
                on_duty=True,
            )
            s.add(responder)
            await s.flush()  # no relationship orders the inserts
            for n, (channel, value) in enumerate(
                [("signal", RESPONDER_SIGNAL), ("telegram", str(RESPONDER_CHAT))]
            ):
                address = new_address(self.vault, channel, value)
                address.responder_id, address.preference = responder.id, n
                s.add(address)
        await engine.dispose()
        self.env.update(
            {
                "AMPARO_PORT": str(free_port()),
                "AMPARO_SIGNAL_SERVICE": self.signal.service,
                "AMPARO_SIGNAL_NUMBER": self.signal.number,
                "AMPARO_TELEGRAM_TOKEN": self.telegram.token,
                "AMPARO_TELEGRAM_API_URL": self.telegram.base_url,
            }
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "amparo", "serve"],
            env=self.env,
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        await self._serving()

    async def _serving(self) -> None:
        """Until ``amparo serve`` listens to the Signal stand-in. A process that ended fails at
        once with what it printed (not a bare timeout a minute later); a loaded machine (CI
        beside other work) gets 90 s to start it."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + 90
        while not self.signal.connected.is_set():
            if self._proc.poll() is not None:
                raise AssertionError(f"amparo serve ended: {self._proc.stdout.read().decode()}")
            assert time.monotonic() < deadline, "amparo serve did not connect to Signal in 90 s"
            await asyncio.sleep(0.05)

    async def _start_receiver(self) -> int:
        async def desk(request: web.Request) -> web.Response:
            self.webhooks.append(json.loads(await request.read()))
            return web.Response(status=204)

        self._receiver = web.AppRunner(web.Application())
        self._receiver.app.router.add_post("/desk", desk)
        await self._receiver.setup()
        site = web.TCPSite(self._receiver, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def invite(self) -> str:
        assert self.vault is not None and self.org_id is not None
        engine = create_engine(self.db_url)
        async with transaction(sessionmaker(engine)) as s:
            _, code = await create_invite(
                s, self.vault, org_id=self.org_id, purpose="defender", now=utcnow()
            )
        await engine.dispose()
        self.codes.append(code)
        return code

    def triggered(self, kind: str) -> list[dict[str, Any]]:
        return [
            b
            for b in self.webhooks
            if b["type"] == "alert.triggered" and b["alert"]["kind"] == kind
        ]

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self.output = self._proc.communicate(timeout=30)[0].decode()
            self._proc = None
        await self.signal.stop()
        await self.telegram.stop()
        if self._receiver is not None:
            await self._receiver.cleanup()
