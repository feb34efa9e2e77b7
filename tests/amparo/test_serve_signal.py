"""`amparo serve` end to end on Signal: the real signalbot 2 against the signal-cli-rest-api
stand-in, through the flows, the database, the scheduler and the outbox, to the defender's
chat, the responder's chats (Signal, then Telegram) and the external desk's webhook."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from aiohttp import WSCloseCode
from PIL import Image
from sqlalchemy import select, update

from core.crypto import open_sealed, unprotect_private_key
from core.db import create_engine, sessionmaker, transaction
from core.models import (
    AlertEvent,
    ChannelAddress,
    CheckIn,
    CheckInState,
    Evidence,
    Organisation,
    OutboxMessage,
    utcnow,
)
from core.reports import EVIDENCE_KIND
from tests.amparo.signal_desk import (
    PASSPHRASE,
    RESPONDER_CHAT,
    RESPONDER_SIGNAL,
    Phone,
    SignalDesk,
    wait_for,
)
from tests.logscan import leaks

ALICE = "3f6b2a8e-1d4c-4e0a-9a37-5c1e2b7d9f60"
DAY, WEEK = 24 * 3600, 7 * 24 * 3600
REPORT_TEXT = "Two men in a grey van photographed the office door"


@asynccontextmanager
async def serving(tmp_path: Path, database_url: str | None) -> AsyncIterator[SignalDesk]:
    found = SignalDesk(tmp_path, database_url=database_url)
    try:
        await found.start()
        yield found
    finally:
        await found.stop()
    secrets = [
        ALICE,
        RESPONDER_SIGNAL,
        str(RESPONDER_CHAT),
        found.signal.number,
        found.telegram.token,
        "/panic",
        REPORT_TEXT,
        "Bogota",
        *found.codes,
    ]
    assert "serving the desk" in found.output  # the log was captured: the scan means something
    for secret in secrets:
        assert not leaks(secret, found.output), "the log leaked an identifier or message text"


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[SignalDesk]:
    """The embedded SQLite, as `make run` has it."""
    async with serving(tmp_path, None) as found:
        yield found


@pytest.fixture
async def desk_on(tmp_path: Path, backend: str, db_url: str) -> AsyncIterator[SignalDesk]:
    """Each backend: PostgreSQL upgraded with `amparo db upgrade`, as in production."""
    async with serving(tmp_path, db_url if backend == "postgresql" else None) as found:
        yield found


def photo_with_gps() -> bytes:
    image = Image.new("RGB", (32, 24), (20, 90, 160))
    exif = Image.Exif()
    exif[0x010F] = "CANARY-CAMERA"
    exif.get_ifd(0x8825).update({1: "N", 2: (4.0, 36.0, 0.0), 3: "W", 4: (74.0, 4.0, 0.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


async def onboard(desk: SignalDesk, alice: Phone) -> None:
    welcome = await alice.say(await desk.invite())
    assert "Which language do you prefer?" in welcome and "1. English" in welcome
    # The newcomer's chat had no timer: one day was set before the bot's first word to her.
    assert desk.signal.timers_set(ALICE) == [DAY]
    calls = [(p, b) for _v, p, b in desk.signal.requests if b and ALICE in json.dumps(b)]
    assert calls[0][0].startswith("/v1/contacts/") and calls[1][0] == "/v2/send"
    assert "Signal encrypts this chat" in await alice.pick("English")
    await alice.pick("I understand")
    await alice.say("4826")
    await alice.say("4826")
    await alice.say("9713")
    assert "Which city" in await alice.say("9713")
    await alice.say("Bogota")
    await alice.pick("Later")
    await alice.pick("No regular check-in")
    await alice.pick("Skip")
    assert "You're all set" in await alice.pick("Skip")


async def test_a_signal_defender_from_invite_to_the_desk(desk_on: SignalDesk) -> None:
    desk = desk_on
    alice = Phone(desk.signal, ALICE)
    await onboard(desk, alice)

    # Disappearing messages: her choice, carried to signal-cli as an outbox instruction.
    await alice.say("/settings")
    assert "disappear after 1 day" in await alice.pick("Disappearing messages")
    assert "now disappear after 1 week" in await alice.pick("1 week")
    await wait_for(lambda: desk.signal.timers_set(ALICE) == [DAY, WEEK])
    before = len(alice.seen())
    frame = await desk.signal.send_text(ALICE, "/help")  # her phone adopted the timer
    assert frame["envelope"]["dataMessage"]["expiresInSeconds"] == WEEK
    await wait_for(lambda: len(alice.seen()) > before)

    # A report with a photo: hashed as received, sealed, with a preview stripped of EXIF.
    photo = photo_with_gps()
    await alice.say("/report")
    await alice.say("1")
    await alice.pick("Today")
    await alice.pick("Skip")
    await alice.say("1")
    await alice.pick("Me")
    await alice.say(REPORT_TEXT)
    await alice.pick("That's all")
    assert "1 file received." in await alice.send_file(photo, "image/jpeg")
    await alice.pick("Done")
    await alice.pick("No, only the desk")
    await alice.pick("Not urgent, for the record")
    assert "Your receipt code is" in await alice.pick("Send")
    engine = create_engine(desk.db_url)
    sessions = sessionmaker(engine)
    async with sessions() as s:
        org = await s.get(Organisation, desk.org_id)
        assert org is not None and org.protected_private_key is not None
        private = unprotect_private_key(org.protected_private_key, PASSPHRASE)
        (evidence,) = (await s.execute(select(Evidence))).scalars()
    assert evidence.filed_at is not None and b"CANARY" not in evidence.sealed
    opened = open_sealed(
        private, evidence.sealed, org_id=org.id, record_id=evidence.id, kind=EVIDENCE_KIND
    )
    assert opened["sha256"] == hashlib.sha256(photo).hexdigest()
    preview = base64.b64decode(opened["preview"])
    assert b"CANARY-CAMERA" in photo and b"CANARY-CAMERA" not in preview
    with Image.open(io.BytesIO(preview)) as im:
        assert not im.getexif()

    # A missed check-in reaches the desk's webhook: the deadline is moved into the past, as if
    # 30 minutes had gone by, and the policy has no grace (FAST).
    await alice.say("/checkin")
    await alice.pick("Check on me in 30 min")
    past = utcnow() - timedelta(seconds=1)
    async with transaction(sessions) as s:
        moved = await s.execute(
            update(CheckIn)
            .where(CheckIn.state == CheckInState.armed)
            .values(due_at=past, next_action_at=past, version=CheckIn.version + 1)
        )
        assert getattr(moved, "rowcount", 0) == 1
    await wait_for(lambda: desk.triggered("missed_checkin"), 60)

    # Panic, while Signal rate-limits the responder: the limit passes, but not within a panic's
    # patience, so the notice falls back to her Telegram at once, and the fallback is on the
    # alert's timeline. Her Signal address is not blocked: a rate limit is no refusal.
    desk.signal.rate_limit_next(recipient=RESPONDER_SIGNAL)
    await alice.say("/panic")
    await wait_for(lambda: desk.triggered("panic"))
    await wait_for(
        lambda: any(str(m["chat_id"]) == str(RESPONDER_CHAT) for m in desk.telegram.sent())
    )
    async with sessions() as s:
        events = (await s.execute(select(AlertEvent))).scalars().all()
    fallbacks = [e.detail for e in events if e.kind == "delivery_fallback"]
    assert fallbacks and fallbacks[0]["from"] == "signal" and fallbacks[0]["to"] == "telegram"
    assert fallbacks[0]["reason"] == "patience"
    async with sessions() as s:
        rows = (await s.execute(select(OutboxMessage))).scalars().all()
        limited = [r for r in rows if r.last_error == "rate limited"]
        assert limited and all(r.channel == "signal" for r in limited)
        addresses = (await s.execute(select(ChannelAddress))).scalars().all()
        assert all(a.blocked_at is None for a in addresses)
    await engine.dispose()
    assert desk.signal.timers_set(ALICE) == [DAY, WEEK]  # never put back over her choice
    for body in desk.webhooks:
        assert ALICE not in json.dumps(body) and REPORT_TEXT not in json.dumps(body)


@pytest.mark.parametrize("code", [WSCloseCode.INTERNAL_ERROR, WSCloseCode.OK])
async def test_it_listens_again_at_once_when_the_socket_closes(
    desk: SignalDesk, code: int
) -> None:
    """signal-cli-rest-api (json-rpc mode) drops what arrives while nobody listens: the bot
    opens its socket again within about a second, however often it is closed (signalbot
    alone waits longer each time), and /healthz reports Signal's inbound."""
    alice = Phone(desk.signal, ALICE)
    invite = await desk.invite()
    url = f"http://127.0.0.1:{desk.env['AMPARO_PORT']}/healthz"
    async with httpx.AsyncClient() as client:
        health = (await client.get(url)).json()
    assert health["inbound"]["signal"] == "ok"
    loop = asyncio.get_running_loop()
    for _ in range(4):
        await desk.signal.close_sockets(code)  # a clean close stops signalbot for good by itself
        closed = loop.time()
        await asyncio.wait_for(desk.signal.connected.wait(), 30)
        assert loop.time() - closed < 3
    await desk.signal.send_text(ALICE, invite)
    await desk.signal.send_text(ALICE, "1")  # English
    await wait_for(lambda: len(alice.seen()) == 2, 60)
    welcome, briefing = alice.seen()
    assert "Which language" in welcome and "Signal encrypts this chat" in briefing


async def test_a_strangers_file_is_deleted_unread(desk_on: SignalDesk) -> None:
    """Wired to the database: someone who is no defender is asked for a code, and the file
    they sent is deleted from signal-cli's store without being fetched (R16, R17)."""
    stranger = Phone(desk_on.signal, "7c0ffee0-3c57-4d3c-9d25-6f1f1d3c0a12")
    assert "If you were given a code" in await stranger.send_file(photo_with_gps(), "image/jpeg")
    (key,) = desk_on.signal.attachments
    await wait_for(lambda: any(key in path for _v, path, _b in desk_on.signal.requests))
    calls = [(verb, path) for verb, path, _b in desk_on.signal.requests if key in path]
    assert calls == [("DELETE", f"/v1/attachments/{key}")]
