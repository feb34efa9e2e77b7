"""`amparo serve` end to end through the flows: the real PTB against the Bot API stand-in, the
database and the outbox, to the defender's chat and to a local desk-webhook receiver.

Each test starts its own ``amparo serve`` (SQLite under tmp_path; the first two also on a
throwaway PostgreSQL upgraded with ``amparo db upgrade``) and plays one or more
defenders by pushing updates into the stand-in. Time is not mocked in a subprocess: deadlines
are moved in the database instead (the sweep runs every 5 s) and the organisation's policy has
no delays. After each test the process log is scanned for the token, chat ids, PINs and texts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.crypto import Vault, load_keyring, open_sealed, unprotect_private_key
from core.db import create_engine, sessionmaker, transaction
from core.defenders import create_invite, save_settings
from core.models import (
    Alert,
    AlertEvent,
    ChannelAddress,
    CheckIn,
    CheckInState,
    Defender,
    EscalationPolicy,
    Evidence,
    Organisation,
    OutboxMessage,
    OutboxState,
    Responder,
    Role,
    utcnow,
)
from core.reports import EVIDENCE_KIND
from core.webhooks import add as add_webhook
from tests.amparo.test_serve import FAST_CHATS, free_port
from tests.amparo.test_serve_telegram import wait_for
from tests.logscan import leaks
from tests.standins.telegram_api import TelegramStandIn

PASSPHRASE = "correct horse battery staple"
PIN, DURESS = "4826", "9713"
# No waiting anywhere on the ladder: a missed deadline reaches the desk on the next sweeps.
FAST = {"pre_reminder_s": None, "grace_s": 0, "desk_after_s": 0, "repeat_s": 60}


@dataclass
class Served:
    api: TelegramStandIn
    data: Path
    vault: Vault
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    org_id: uuid.UUID
    hook_secret: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # must never reach the process log
    log: str = ""

    async def invite(self) -> str:
        async with transaction(self.sessions) as s:
            _, code = await create_invite(
                s, self.vault, org_id=self.org_id, purpose="defender", now=utcnow()
            )
        self.secrets.append(code)
        return code

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for _h, raw in self.received]


@dataclass
class Chat:
    """One defender's private chat with the bot."""

    served: Served
    id: int

    @property
    def api(self) -> TelegramStandIn:
        return self.served.api

    def replies(self) -> list[dict[str, Any]]:
        return [p for p in self.api.sent() if p.get("chat_id") == self.id]

    async def _answered(self, before: int) -> dict[str, Any]:
        await wait_for(lambda: len(self.replies()) > before)
        return self.replies()[-1]

    async def say(self, text: str) -> dict[str, Any]:
        self.served.secrets.append(text)
        before = len(self.replies())
        self.api.send_text(self.id, text)
        return await self._answered(before)

    async def press(self, label: str) -> dict[str, Any]:
        removed = False  # a reply keyboard lasts until one is removed; inline buttons stay
        for reply in reversed(self.replies()):
            markup = reply.get("reply_markup", {})
            removed = removed or "remove_keyboard" in markup
            rows = markup.get("inline_keyboard", [])
            found = [b for row in rows for b in row if b["text"] == label]
            if found:
                before = len(self.replies())
                self.api.press(self.id, found[0]["callback_data"])
                return await self._answered(before)
            rows = [] if removed else markup.get("keyboard", [])
            if any(b == {"text": label} for row in rows for b in row):
                return await self.say(label)  # a reply keyboard's text button sends its label
        raise AssertionError(f"no button {label!r} in the chat")

    async def onboard(self) -> dict[str, Any]:
        await self.say(await self.served.invite())
        await self.press("English")
        await self.press("I understand")
        await self.say(PIN)
        await self.say(PIN)
        await self.say(DURESS)
        assert "Your PINs are set." in (await self.say(DURESS))["text"]
        await self.say("Madrid")
        await self.press("Later")
        await self.press("No regular check-in")
        await self.press("Skip")
        done = await self.press("Skip")
        assert "You're all set" in done["text"]
        return done

    async def defender(self) -> Defender:
        index = self.served.vault.address_index("telegram", str(self.id))
        async with self.served.sessions() as s:
            stmt = (
                select(Defender)
                .join(ChannelAddress, ChannelAddress.defender_id == Defender.id)
                .where(ChannelAddress.blind_index == index)
            )
            return (await s.execute(stmt)).scalar_one()


async def _org(env: dict[str, str], data: Path) -> tuple[Vault, uuid.UUID]:
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "amparo", "org", "create", "Desk", "--json"],
        env=env,
        input=PASSPHRASE + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return Vault(load_keyring(data / "master.key")), uuid.UUID(json.loads(made.stdout)["id"])


@asynccontextmanager
async def serving(
    tmp_path: Path,
    *,
    policy: dict[str, Any] | None = None,
    settings: dict[str, str] | None = None,
    database_url: str | None = None,  # None: the embedded SQLite under the data dir
) -> AsyncIterator[Served]:
    api = TelegramStandIn()
    await api.start()
    receiver = web.AppRunner(web.Application(), access_log=None)
    received: list[tuple[dict[str, str], bytes]] = []

    async def desk(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    receiver.app.router.add_post("/desk", desk)
    await receiver.setup()
    site = web.TCPSite(receiver, "127.0.0.1", 0)
    await site.start()
    desk_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

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
    sessions = sessionmaker(engine)
    async with transaction(sessions) as s:
        _, hook_secret = await add_webhook(
            s, vault, org_id=org_id, url=f"http://127.0.0.1:{desk_port}/desk"
        )
        if policy is not None:
            s.add(
                EscalationPolicy(
                    id=uuid.uuid4(), org_id=org_id, name="fast", steps=policy, is_default=True
                )
            )
    served = Served(api, data, vault, engine, sessions, org_id, hook_secret, received)
    served.secrets.append(api.token)
    env.update(
        {
            "AMPARO_PORT": str(free_port()),
            "AMPARO_TELEGRAM_TOKEN": api.token,
            "AMPARO_TELEGRAM_API_URL": api.base_url,
            **(settings or {}),
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
        yield served
    finally:
        proc.terminate()
        served.log = (await asyncio.to_thread(proc.communicate, timeout=30))[0].decode()
        await api.stop()
        await receiver.cleanup()
        await engine.dispose()
    chats = {str(p.get("chat_id")) for p in api.sent()}
    for secret in [*served.secrets, *chats]:
        assert not leaks(secret, served.log), "the log leaked an identifier or message text"


async def test_onboarding_then_panic_with_location(
    tmp_path: Path, backend: str, db_url: str
) -> None:
    url = db_url if backend == "postgresql" else None
    async with serving(tmp_path, database_url=url) as served:
        chat = Chat(served, 7319046682)
        await chat.onboard()
        defender = await chat.defender()
        assert defender.status.value == "active" and defender.cancel_pin_hash
        # The PINs were deleted from the chat at once (four of them).
        deleted = [c.params for c in served.api.calls if c.method.startswith("deleteMessage")]
        assert len(deleted) >= 4 and all(p["chat_id"] == chat.id for p in deleted)

        asked = await chat.say("/panic")
        assert "Only the desk can read it" in asked["text"]
        keyboard = asked["reply_markup"]["keyboard"]  # the location request, and skip
        assert keyboard[0][0]["request_location"] is True and keyboard[1][0]["text"] == "Skip"
        before = len(chat.replies())
        served.api.send_location(chat.id, 40.4168, -3.7038)
        await wait_for(lambda: len(chat.replies()) > before)
        assert "Location received." in chat.replies()[-1]["text"]
        await chat.press("No, I can't talk")
        asked_pin = await chat.press("Call it off")
        assert asked_pin["reply_markup"] == {"remove_keyboard": True}  # gone by now
        await wait_for(lambda: served.received)
        event = served.events()[0]
        assert event["type"] == "alert.triggered" and event["alert"]["kind"] == "panic"
        raw = served.received[0][1].decode()
        assert "40.4168" not in raw and str(chat.id) not in raw
        async with served.sessions() as s:
            alert = (await s.execute(select(Alert))).scalar_one()
            assert alert.location_sealed is not None  # sealed to the desk's key
            kinds = [
                e.kind
                for e in (
                    await s.execute(select(AlertEvent).where(AlertEvent.alert_id == alert.id))
                )
                .scalars()
                .all()
            ]
        assert any("location" in k for k in kinds)
        served.secrets += ["40.4168", "-3.7038"]


async def _due_now(served: Served, grace_s: int) -> None:
    """The armed timer's deadline, brought to now (the flow's shortest is 5 minutes)."""
    async with transaction(served.sessions) as s:
        now = utcnow()
        await s.execute(
            update(CheckIn)
            .where(CheckIn.state == CheckInState.armed)
            .values(due_at=now, next_action_at=now, grace_s=grace_s)
        )


async def test_a_timer_met_and_a_timer_missed_reaching_the_desk(
    tmp_path: Path, backend: str, db_url: str
) -> None:
    url = db_url if backend == "postgresql" else None
    async with serving(tmp_path, policy=FAST, database_url=url) as served:
        chat = Chat(served, 5550001001)
        await chat.onboard()
        await chat.say("/checkin")
        armed = await chat.press("Check on me in 30 min")
        assert "Timer set" in armed["text"]
        await _due_now(served, grace_s=3600)  # met: the reminder comes, the defender answers
        before = len(chat.replies())
        await wait_for(lambda: len(chat.replies()) > before)
        assert "I'm safe" in json.dumps(chat.replies()[-1].get("reply_markup", {}))
        await chat.press("I'm safe")
        thanks = await chat.say(PIN)
        assert "We noted that you are safe" in thanks["text"]
        async with served.sessions() as s:
            states = [c.state for c in (await s.execute(select(CheckIn))).scalars()]
        assert states == [CheckInState.met]

        await chat.say("/checkin")
        await chat.press("Check on me in 1 hour")
        await _due_now(served, grace_s=0)  # missed: nobody answers the reminder
        await wait_for(lambda: served.received, seconds=40)
        event = served.events()[0]
        assert event["type"] == "alert.triggered" and event["alert"]["kind"] == "missed_checkin"
        assert len(served.received) == 1 or served.events()[1]["alert"]["kind"] != "panic"
        async with served.sessions() as s:
            states = sorted(c.state for c in (await s.execute(select(CheckIn))).scalars())
        assert CheckInState.missed in states and CheckInState.met in states


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    gps = {1: "N", 2: (40.0, 25.0, 0.48), 3: "W", 4: (3.0, 42.0, 13.68)}
    exif[0x8825] = gps  # GPSInfo
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    data = out.getvalue()
    with Image.open(io.BytesIO(data)) as check:  # the test photo really carries GPS
        assert check.getexif().get_ifd(0x8825)
    return data


async def test_a_report_with_a_photo_keeps_no_gps_in_the_preview(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        chat = Chat(served, 5550002002)
        await chat.onboard()
        first = await chat.say("/report")
        acts = first["reply_markup"]["inline_keyboard"]
        await chat.press(acts[0][0]["text"])
        await chat.press("Today")
        await chat.press("Skip")
        who = chat.replies()[-1]["reply_markup"]["inline_keyboard"]
        await chat.press(who[0][0]["text"])
        await chat.press("Me")
        await chat.say("Two men followed me home from the office.")
        await chat.press("That's all")
        photo = jpeg_with_gps()
        before = len(chat.replies())
        served.api.send_photo(chat.id, photo, file_id="evidence-1")
        await wait_for(lambda: len(chat.replies()) > before)
        assert "1 file received." in chat.replies()[-1]["text"]
        await chat.press("Done")
        await chat.press("No, only the desk")
        await chat.press("Not urgent, for the record")
        sent = await chat.press("Send")
        assert "receipt code" in sent["text"]
        async with served.sessions() as s:
            org = await s.get(Organisation, served.org_id)
            evidence = (await s.execute(select(Evidence))).scalar_one()
        assert org is not None and org.protected_private_key is not None
        assert evidence.filed_at is not None
        private = unprotect_private_key(org.protected_private_key, PASSPHRASE)
        body = open_sealed(
            private, evidence.sealed, org_id=org.id, record_id=evidence.id, kind=EVIDENCE_KIND
        )
        assert body["sha256"] == hashlib.sha256(photo).hexdigest()
        assert base64.b64decode(body["original"]) == photo  # the original, sealed
        preview = base64.b64decode(body["preview"])
        with Image.open(io.BytesIO(preview)) as im:
            exif = im.getexif()
            assert not exif.get_ifd(0x8825) and 0x010F not in exif and "exif" not in im.info
        assert b"PhoneMaker" not in preview and b"GPS" not in preview
        # The getFile URL embeds the token: it never reached the log (checked on exit).


async def test_discreet_mode_deletes_pins_at_once_and_sensitive_replies_later(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as served:
        chat = Chat(served, 5550003003)
        await chat.onboard()
        async with transaction(served.sessions) as s:
            defender = await s.get(Defender, (await chat.defender()).id)
            assert defender is not None
            defender.discreet = True
            save_settings(served.vault, defender, {"discreet_delay_s": 2})
        served.api.calls.clear()
        asked = await chat.say("/safe")  # sensitive in discreet mode: every reply is
        pin_message = served.api.send_text(chat.id, PIN)["message"]["message_id"]
        await wait_for(lambda: len(chat.replies()) >= 2)
        sent_at = time.monotonic()

        def deleted() -> list[int]:
            found: list[int] = []
            for c in served.api.calls:
                if c.method == "deleteMessages":
                    found += c.params["message_ids"]
                elif c.method == "deleteMessage":
                    found.append(int(c.params["message_id"]))
            return found

        await wait_for(lambda: pin_message in deleted())  # the PIN: at once, with the reply
        assert len(deleted()) == 1
        # The bot's own two replies and the defender's "/safe": after the defender's delay
        # (2 s), not before.
        await wait_for(lambda: len(deleted()) >= 4, seconds=20)
        assert time.monotonic() - sent_at >= 1.5
        bot_ids = [
            c.params["message_ids"] for c in served.api.calls if c.method == "deleteMessages"
        ][1:]
        assert len([i for ids in bot_ids for i in ids]) == 3
        assert asked["text"]
        # Telegram has answered the last deletion; its delivery is recorded just after. What
        # was said before discreet mode went on is deleted a day after it was sent.
        query = select(OutboxMessage.state).where(
            OutboxMessage.idempotency_key.startswith("del:"),
            OutboxMessage.next_attempt_at < utcnow() + timedelta(hours=1),
        )
        deadline = time.monotonic() + 10
        while True:
            async with served.sessions() as s:
                states = set((await s.execute(query)).scalars())
            if OutboxState.sending not in states or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert states == {OutboxState.delivered}


async def test_a_replayed_update_is_ignored(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        chat = Chat(served, 5550004004)
        await chat.onboard()
        served.api.calls.clear()
        update_sent = served.api.send_text(chat.id, "/panic")
        await wait_for(lambda: served.received)
        await wait_for(lambda: len(chat.replies()) >= 1)
        served.api.replay(update_sent)  # Telegram sends it again: no second alert, no reply
        later = await chat.press("Skip")  # the next real update is answered normally …
        assert "talk" in later["text"]
        assert len(chat.replies()) == 2  # … and the replay produced nothing
        async with served.sessions() as s:
            assert len((await s.execute(select(Alert))).scalars().all()) == 1


async def test_429_403_and_5xx_storms_lose_nothing(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        chat = Chat(served, 5550005005)
        await chat.onboard()
        # A responder on duty, reachable in two Telegram chats; the first has blocked the bot.
        blocked_chat, other_chat = 5550005100, 5550005101
        async with transaction(served.sessions) as s:
            responder = Responder(
                id=uuid.uuid4(),
                org_id=served.org_id,
                username="r-on-duty",
                role=Role.responder,
                password_hash="x",
                on_duty=True,
            )
            s.add(responder)
            await s.flush()
            for n, value in enumerate((blocked_chat, other_chat)):
                where = ChannelAddress(
                    id=uuid.uuid4(),
                    channel="telegram",
                    blind_index=served.vault.address_index("telegram", str(value)),
                    responder_id=responder.id,
                    preference=n,
                )
                where.put(served.vault, "value_enc", str(value))
                s.add(where)
        served.api.blocked.add(blocked_chat)

        # 429 with retry_after: the reply waits at least that long, then arrives.
        served.api.fail_next(
            "sendMessage",
            429,
            "Too Many Requests: retry after 2",
            {"retry_after": 2},
            chat_id=chat.id,
        )
        started = time.monotonic()
        menu = await chat.say("/checkin")
        assert time.monotonic() - started >= 2.0 and "Check-ins" in menu["text"]

        # 403: the panic reaches the responder's other chat, written on the timeline.
        await chat.press("Check on me in 2 hours")
        served.api.fail_next("sendMessage", 502, "Bad Gateway", times=3)
        before = len(chat.replies())
        served.api.send_text(chat.id, "/panic")
        await wait_for(lambda: served.received)
        await wait_for(lambda: any(p["chat_id"] == other_chat for p in served.api.sent()), 40)
        await wait_for(lambda: len(chat.replies()) > before, 40)  # the 5xx storm passed
        assert not any(p["chat_id"] == blocked_chat for p in served.api.sent())
        statuses = [c.status for c in served.api.calls if c.method == "sendMessage"]
        assert statuses.count(502) == 3 and statuses.count(429) == 1 and 403 in statuses

        async def settled() -> tuple[set[OutboxState], list[str]]:
            # Not the deletions of the defender's chat, due a day later (SECURITY.md R12).
            soon = OutboxMessage.next_attempt_at < utcnow() + timedelta(hours=1)
            async with served.sessions() as s:
                states = {r for (r,) in await s.execute(select(OutboxMessage.state).where(soon))}
                kinds = [k for (k,) in await s.execute(select(AlertEvent.kind))]
            return states, kinds

        deadline = time.monotonic() + 30
        while True:
            states, kinds = await settled()
            if OutboxState.pending not in states and OutboxState.sending not in states:
                break
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.2)
        assert states <= {OutboxState.delivered, OutboxState.failed}  # nothing dead or lost
        assert "delivery_fallback" in kinds
        served.secrets += [str(blocked_chat), str(other_chat)]
