"""Random event sequences through every flow: never an exception, always a reply, and the
stored state always one the engine knows."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from core.messages import InboundAttachment, Location
from core.models import ChannelAddress, Conversation, Defender
from flows import registry
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Event, Pick, Said, onboard

WORDS = [
    "/checkin", "/report", "/settings", "/alert", "/safe", "/status", "/safety", "/start",
    "/cancel", "help", "cancel", "menu", "ayuda", "45m", "2h30", "at 18:30", "Bogota",
    "UTC-5", "20:00", "2024-05-03", "3", CANCEL_PIN, DURESS_PIN, "0000", "١٢٣٤", "1", "2",
    "4", "9", "yes", "no", "hello", "Ana", "\u202eevil", "x" * 4001, "   ", "\x00",
]  # fmt: skip
KEYS = [
    "lang:es", "lang:ar", "continue", "later", "add", "done", "none", "skip", "every_day",
    "30m", "1h", "custom", "safe", "extend", "routine", "pause", "resume", "status", "15m",
    "travelling", "calloff", "yes", "no", "accept", "decline", "threat", "today", "unknown",
    "me", "others", "unsure", "police", "anonymous", "urgent", "record", "send", "discard",
    "pins", "cancel", "duress", "contacts", "remove", "zone", "discreet", "on", "phrases",
    "alert_phrase", "delete", "language", "menu:checkin", "menu:report", "menu:settings",
    "menu:help", "panic", "back", "garbage",
]  # fmt: skip
FILE = InboundAttachment("photo", "image/jpeg", 4, b"\xff\xd8\xff\xe0")
EVENTS = st.one_of(
    st.sampled_from(WORDS),
    st.text(max_size=20),
    st.sampled_from(KEYS).map(Pick),
    st.just(Event(location=Location(4.6, -74.1))),
    st.just(Event(attachments=(FILE,))),
    st.sampled_from(WORDS).map(lambda t: Event(text=t, forwarded=True)),
    st.sampled_from(WORDS).map(lambda t: Event(text=t, edited=True)),
    st.just(Event(location=Location(4.6, -74.1), edited=True)),
)


async def check_stored_state(desk: Desk, chat: Chat) -> None:
    index = desk.vault.address_index(chat.channel, chat.address)
    async with desk.sessions() as s:
        address = (
            await s.execute(select(ChannelAddress).where(ChannelAddress.blind_index == index))
        ).scalar_one()
        owner = (
            Conversation.defender_id == address.defender_id
            if address.defender_id
            else Conversation.address_id == address.id
        )
        row = (await s.execute(select(Conversation).where(owner))).scalar_one_or_none()
        if address.defender_id:
            defender = await s.get(Defender, address.defender_id)
            assert defender is not None and defender.locale in ("en", "es", "fr", "pt", "ar")
    if row is None:
        return
    assert row.flow == "idle" or registry.valid(row.flow, row.state), (row.flow, row.state)
    raw = row.get_text(desk.vault, "data_enc")
    assert isinstance(json.loads(raw) if raw else {}, dict)
    assert (row.expires_at is None) == (row.flow == "idle" or registry.get(row.flow).ttl is None)  # type: ignore[union-attr]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=st.lists(EVENTS, min_size=1, max_size=15), enrolled=st.booleans())
async def test_it_survives_random_event_sequences(
    desk: Desk, caplog: pytest.LogCaptureFixture, events: list[Said], enrolled: bool
) -> None:
    caplog.clear()
    address = f"h-{uuid.uuid4().hex[:8]}"
    chat = await onboard(desk, address) if enrolled else desk.chat(address)
    if not enrolled and events and isinstance(events[0], str):
        events[0] = await desk.invite()  # a stranger sometimes starts with a real code
    for said in events:
        replies = await chat.say(said)
        edited = isinstance(said, Event) and said.edited
        assert len(replies) <= 1 if edited else len(replies) == 1, (said, replies)
        for reply in replies:
            assert reply.text or reply.delete_message_ids
        await check_stored_state(desk, chat)
        desk.clock.advance(minutes=7)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
