"""`amparo serve` in Telegram's webhook mode, end to end (issue #5, SECURITY.md R1).

The real application runs with ``AMPARO_TELEGRAM_WEBHOOK_URL`` and
``AMPARO_TELEGRAM_WEBHOOK_SECRET``: its route ``/hooks/telegram`` is the one ``mount_webhooks``
adds, behind the real middlewares (``api.hardening``). The Bot API stand-in plays Telegram: it
records ``setWebhook`` and POSTs each update a user makes to the registered URL with the
registered secret in ``X-Telegram-Bot-Api-Secret-Token`` (LIBRARIES.md §1.4). Forged posts
(no secret, a wrong one, a prefix of it, another case) must be refused before anything is read:
every table of the database is compared, row by row, before and after. A redelivered update is
handled once. A NUL in a defender's message is answered as the polling path answers it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import create_engine, sessionmaker
from core.models import Base, OutboxMessage, OutboxState, utcnow
from tests.amparo.test_serve import FAST_CHATS, free_port
from tests.amparo.test_serve_telegram import wait_for
from tests.amparo.test_serve_telegram_flows import DURESS, PIN, Chat, Served, _org, serving
from tests.logscan import leaks
from tests.standins.telegram_api import TelegramStandIn

HEADER = "X-Telegram-Bot-Api-Secret-Token"


@dataclass
class HookedStandIn(TelegramStandIn):
    """Telegram with a webhook set: nothing is polled; each update is POSTed to the URL that
    ``setWebhook`` registered, with its ``secret_token``. ``statuses``: what the app answered."""

    statuses: list[int] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def registered(self) -> dict[str, Any]:
        calls = self.sent("setWebhook")
        assert calls, "setWebhook was never called"
        return calls[-1]

    def compose(self, chat_id: int, text: str) -> dict[str, Any]:
        """A text update, not delivered (a forger's, or one to deliver more than once)."""
        return {"update_id": next(self._update_ids), "message": self._message(chat_id, text=text)}

    def push(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = super().push(kind, payload)
        self._updates.remove(update)  # delivered, never queued for getUpdates
        task = asyncio.get_running_loop().create_task(self._deliver(update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return update

    async def _deliver(self, update: dict[str, Any]) -> None:
        secret = str(self.registered().get("secret_token", ""))
        self.statuses.append(await self.post(update, {HEADER: secret}))

    async def post(
        self, update: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> int:
        """POST an update (or a raw body) to the webhook as Telegram does: JSON, ASCII-escaped
        (a NUL arrives as ``\\u0000``)."""
        body = update if isinstance(update, bytes) else json.dumps(update).encode()
        async with httpx.AsyncClient(timeout=20) as client:
            answer = await client.post(
                self.registered()["url"],
                content=body,
                headers={"Content-Type": "application/json", **(headers or {})},
            )
        return answer.status_code


@dataclass
class Hooked(Served):
    url: str = ""  # AMPARO_TELEGRAM_WEBHOOK_URL
    secret: str = ""  # AMPARO_TELEGRAM_WEBHOOK_SECRET


@asynccontextmanager
async def hooked(tmp_path: Path, database_url: str | None) -> AsyncIterator[Hooked]:
    api = HookedStandIn()
    await api.start()
    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
    env.update({"AMPARO_DATA_DIR": str(data), "LANG": "C.UTF-8", **FAST_CHATS})
    if database_url is not None:  # PostgreSQL is upgraded by the operator, as in production
        env["AMPARO_DATABASE_URL"] = database_url
        upgraded = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "amparo", "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upgraded.returncode == 0, upgraded.stderr
    vault, org_id = await _org(env, data)
    engine = create_engine(database_url or f"sqlite+aiosqlite:///{data / 'amparo.db'}")
    port = free_port()
    served = Hooked(api, data, vault, engine, sessionmaker(engine), org_id, hook_secret="")
    served.url = f"http://127.0.0.1:{port}/hooks/telegram"
    served.secret = secrets.token_urlsafe(32)  # 43 characters of A-Z a-z 0-9 _ -
    served.secrets += [api.token, served.secret]
    env.update(
        {
            "AMPARO_PORT": str(port),
            "AMPARO_TELEGRAM_TOKEN": api.token,
            "AMPARO_TELEGRAM_API_URL": api.base_url,
            "AMPARO_TELEGRAM_WEBHOOK_URL": served.url,
            "AMPARO_TELEGRAM_WEBHOOK_SECRET": served.secret,
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
        await wait_for(lambda: api.sent("setWebhook"), 20)
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    await client.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server never listened"
                    await asyncio.sleep(0.05)
        yield served
    finally:
        proc.terminate()
        served.log = (await asyncio.to_thread(proc.communicate, timeout=30))[0].decode()
        await api.stop()
        await engine.dispose()
    chats = {str(p.get("chat_id")) for p in api.sent()}
    for leaked in [*served.secrets, *chats]:
        assert not leaks(leaked, served.log), "the log leaked an identifier, a secret or a text"


Snapshot = dict[str, list[str]]


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> Snapshot:
    """Every row of every table (a refused update must change none, not only add none)."""
    async with sessions() as s:
        return {
            table.name: sorted(repr(tuple(row)) for row in await s.execute(select(table)))
            for table in Base.metadata.sorted_tables
        }


async def settled(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Until the dispatcher has sent all that was queued (it changes outbox rows meanwhile),
    but the deletions of the defender's chat, due a day later (SECURITY.md R12)."""
    deadline = time.monotonic() + 20
    busy = (OutboxState.pending, OutboxState.sending)
    soon = OutboxMessage.next_attempt_at < utcnow() + timedelta(hours=1)
    while True:
        async with sessions() as s:
            stmt = select(func.count()).select_from(OutboxMessage)
            left = await s.scalar(stmt.where(OutboxMessage.state.in_(busy), soon))
        if not left:
            return
        assert time.monotonic() < deadline, "the outbox never emptied"
        await asyncio.sleep(0.05)


def methods(api: TelegramStandIn) -> list[str]:
    return [c.method for c in api.calls]


async def to_the_city_step(chat: Chat) -> None:
    """Onboarding up to its first free-text question (Chat.onboard's first steps)."""
    await chat.press("English")
    await chat.press("I understand")
    for pin in (PIN, PIN, DURESS):
        await chat.say(pin)
    assert "Which city are you in" in (await chat.say(DURESS))["text"]


NUL_CITY = "Mad\x00rid"


def asked_again(asked: dict[str, Any]) -> None:
    """What a NUL in a defender's message gets: the flows ask for it again, on either backend
    (PostgreSQL refuses a NUL in text: nothing of the message is stored as text)."""
    assert asked["text"].startswith("That message contains invisible control characters.")
    assert "Which city are you in" in asked["text"]


async def test_webhook_mode_end_to_end(tmp_path: Path, backend: str, db_url: str) -> None:
    async with hooked(tmp_path, db_url if backend == "postgresql" else None) as served:
        api = served.api
        assert isinstance(api, HookedStandIn)
        # At start: setWebhook with the URL and the secret; getUpdates never (409 meanwhile).
        registered = api.registered()
        assert registered["url"] == served.url
        secret = str(registered["secret_token"])
        assert secret == served.secret
        assert {"message", "callback_query"} <= set(registered["allowed_updates"])
        assert "getUpdates" not in methods(api)

        # A defender's invite code, with the right secret: handled, answered, recorded.
        chat = Chat(served, 6120334455)
        code = await served.invite()
        before = await snapshot(served.sessions)
        assert await api.post(api.compose(chat.id, code), {HEADER: secret}) == 200
        await wait_for(chat.replies, 20)
        assert "inline_keyboard" in chat.replies()[-1]["reply_markup"]  # the language question
        after = await snapshot(served.sessions)
        for table in ("defenders", "channel_addresses", "conversations", "seen_inbound"):
            assert len(after[table]) == len(before[table]) + 1, table
        assert len(after["outbox"]) > len(before["outbox"])

        # The next steps, as Telegram delivers them (button presses too); then a NUL.
        served.secrets.append(code)
        await to_the_city_step(chat)
        assert set(api.statuses) == {200}
        # A NUL (JSON "\u0000") in the defender's answer: taken, and answered as when polling
        # (a 400 from the NUL guard meant Telegram resending it, then dropping it: no answer).
        before = len(chat.replies())
        assert await api.post(api.compose(chat.id, NUL_CITY), {HEADER: secret}) == 200
        await wait_for(lambda: len(chat.replies()) > before, 20)
        asked_again(chat.replies()[-1])

        # Forged updates from the defender's chat: refused (401) before the body is read;
        # not one row of any table changes, nothing is sent, the update id is not spent.
        city = api.compose(chat.id, "Madrid")
        await settled(served.sessions)
        before, sent = await snapshot(served.sessions), len(api.sent())
        for headers in (
            {},  # no header
            {HEADER: ""},
            {HEADER: secrets.token_urlsafe(32)},
            {HEADER: secret[:-1]},  # a prefix
            {HEADER: secret + "x"},
            {HEADER: secret.swapcase()},
            {"X-Telegram-Bot-Api-Secret": secret},  # the right value under another name
        ):
            assert await api.post(city, headers) == 401, list(headers)
        assert await api.post(b"{not json", {HEADER: "wrong"}) == 401
        assert await api.post(b'{"update_id": 1, "x": "\\u0000"}', {}) == 401
        # Bodies above the cap (R22) are refused whatever the secret.
        padded = {**city, "padding": "x" * (300 * 1024)}
        assert await api.post(padded, {HEADER: secret}) == 413
        await asyncio.sleep(0.5)  # the dispatcher's time to send anything it was given
        assert await snapshot(served.sessions) == before
        assert len(api.sent()) == sent

        # The same update with the right secret: handled (its id was not spent), answered.
        assert await api.post(city, {HEADER: secret}) == 200
        await wait_for(lambda: len(api.sent()) > sent, 20)
        assert "Which city are you in" not in chat.replies()[-1]["text"]  # the next question
        await settled(served.sessions)
        after = await snapshot(served.sessions)
        assert len(after["seen_inbound"]) == len(before["seen_inbound"]) + 1

        # Telegram delivers it again (our 200 was lost): handled once, nothing more.
        before, sent = after, len(api.sent())
        assert await api.post(city, {HEADER: secret}) == 200
        await asyncio.sleep(0.5)
        assert await snapshot(served.sessions) == before
        assert len(api.sent()) == sent
        assert not {"getUpdates", "deleteWebhook"} & set(methods(api))  # the webhook stayed
        served.secrets.append("Madrid")


async def test_polling_answers_a_nul_the_same(tmp_path: Path, backend: str, db_url: str) -> None:
    """The webhook's NUL answer above is the polling path's (one behaviour, both modes)."""
    async with serving(tmp_path, database_url=db_url if backend == "postgresql" else None) as s:
        chat = Chat(s, 6120334466)
        await chat.say(await s.invite())
        await to_the_city_step(chat)
        asked_again(await chat.say(NUL_CITY))
