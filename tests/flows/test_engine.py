"""The engine: replays, order, restarts, expiry, bad input and failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from threading import get_ident
from typing import Any

import pytest
from sqlalchemy import event, select

from core import alert_handling
from core.crypto import open_sealed
from core.db import transaction
from core.messages import InboundAttachment, Location
from core.models import (
    Alert,
    AlertEvent,
    AlertKind,
    CheckIn,
    Conversation,
    Evidence,
    OutboxMessage,
    Priority,
    SeenInbound,
)
from flows import registry, store
from flows.engine import housekeeping
from tests.flows.conftest import CANCEL_PIN, Desk, Event, Pick, Said, onboard


async def conversation(desk: Desk) -> tuple[str, str, dict[str, object]]:
    async with desk.sessions() as s:
        row = (await s.execute(select(Conversation))).scalar_one()
    raw = row.get_text(desk.vault, "data_enc")
    return row.flow, row.state, json.loads(raw) if raw else {}


RESTARTS: dict[str, tuple[Sequence[Said], Said, str]] = {
    "onboarding": ((Pick("lang:en"), Pick("continue"), "4826"), "4826", "second, different PIN"),
    "panic": (("/alert",), Pick("skip"), "Can you talk"),
    "checkin": (("/checkin", Pick("custom")), "45m", "Timer set"),
    "report": (("/report", Pick("threat"), Pick("today")), Pick("skip"), "Who did it?"),
    "settings": (("/settings", Pick("pins"), CANCEL_PIN), Pick("cancel"), "Send the new PIN"),
    "setup": (("/settings", Pick("zone")), "Lima", "Saved."),
}


@pytest.mark.parametrize("flow", sorted(RESTARTS))
async def test_it_resumes_each_flow_after_a_restart(desk: Desk, flow: str) -> None:
    before, then, expected = RESTARTS[flow]
    if flow == "onboarding":
        chat = desk.chat()
        await chat.say(await desk.invite())
    else:
        chat = await onboard(desk)
    for said in before:
        await chat.say(said)
    assert (await conversation(desk))[0] == flow
    desk.restart()
    assert expected in await chat.text(then)


async def test_it_resumes_a_contact_confirmation_after_a_restart(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("/settings", Pick("contacts"), Pick("add"), CANCEL_PIN):
        await alice.say(said)
    code = (await alice.text("Ana")).split("by phone: ")[1].split("\n")[0]
    ana = desk.chat("ana")
    await ana.say(code)
    desk.restart()
    assert "Thank you" in await ana.text(Pick("accept"))


async def test_it_handles_one_persons_messages_in_order(desk: Desk) -> None:
    alice = await onboard(desk)
    said: list[Said] = ["/checkin", Pick("custom"), "45m", "/status"]
    replies = await asyncio.gather(*(alice.say(s) for s in said))
    assert "Your next check-in is due" in "".join(m.text for r in replies for m in r)
    async with desk.sessions() as s:
        (timer,) = (await s.execute(select(CheckIn))).scalars()
    assert (timer.due_at - desk.clock.now).total_seconds() == 45 * 60


async def test_it_ignores_group_chats(desk: Desk) -> None:
    alice = await onboard(desk)
    assert await alice.say(Event(text="/alert", private=False)) == []
    async with desk.sessions() as s:
        assert (await s.execute(select(Alert))).first() is None


async def test_it_closes_an_abandoned_conversation_politely(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/report")
    await alice.say(Pick("threat"))
    desk.clock.advance(hours=7)
    async with transaction(desk.sessions) as s:
        assert await store.expire(s, now=desk.clock.now) == 1
    assert await conversation(desk) == ("idle", "expired", {})
    replies = await alice.say(Pick("today"))
    assert "closed after a long silence" in replies[0].text
    assert "What would you like to do?" in replies[0].text


@pytest.mark.parametrize(
    ("said", "complaint"),
    [
        ("Gunmen at the \u202eeerf\u202c bridge", "invisible control characters"),
        ("x" * 4001, "too long"),
        (
            Event(attachments=(InboundAttachment("photo", "image/jpeg", 3, b"abc"),)),
            "text message",
        ),
        (Event(location=Location(1.0, 2.0)), "text message"),
    ],
)
async def test_it_asks_again_after_bad_input_and_keeps_the_state(
    desk: Desk, said: Said, complaint: str
) -> None:
    alice = await onboard(desk)
    for step in ("/report", Pick("threat"), Pick("today"), Pick("skip"), Pick("police")):
        await alice.say(step)
    await alice.say(Pick("me"))
    before = await conversation(desk)
    text = await alice.text(said)
    assert complaint in text and "Tell us what happened" in text
    assert await conversation(desk) == before


async def test_it_keeps_the_state_through_help_and_unknown_commands(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/checkin")
    assert "/safety" in await alice.text("help")
    assert "Timer set" in await alice.text("2")  # the second option of the menu asked before
    assert "didn't understand" in await alice.text("/weather")


async def test_it_still_raises_the_alert_when_the_flow_fails(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await onboard(desk)

    async def broken(ctx: object) -> str:
        raise RuntimeError("a bug")

    spec = registry.get("panic")
    assert spec is not None
    monkeypatch.setitem(spec.states, "start", broken)
    replies_to_device = select(OutboxMessage.priority).where(
        OutboxMessage.idempotency_key.startswith("reply:")
    )
    async with desk.sessions() as s:
        before = list((await s.execute(replies_to_device)).scalars())
    replies = await alice.say("/alert")
    assert "something went wrong" in replies[0].text
    async with desk.sessions() as s:
        (alert,) = (await s.execute(select(Alert))).scalars()
        after = list((await s.execute(replies_to_device)).scalars())
    assert alert.kind is AlertKind.panic
    # the fallback's answer jumps the queue
    assert after.count(Priority.P0) == before.count(Priority.P0) + 1


async def test_it_feeds_live_location_edits_to_the_open_alert(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/alert")
    shared = Location(4.6, -74.1, live=True)
    await alice.say(Event(location=shared, chat_message_id="live-1"))  # for this alert
    await alice.say("/checkin")  # the conversation moved on; the alert is still open
    moved = Event(location=Location(4.7, -74.2, live=True), edited=True, chat_message_id="live-1")
    assert await alice.say(moved) == []
    async with desk.sessions() as s:
        (alert,) = (await s.execute(select(Alert))).scalars()
        kinds = (await s.execute(select(AlertEvent.kind))).scalars().all()
    assert alert.location_sealed is not None
    where = open_sealed(
        desk.private_key, alert.location_sealed, org_id=desk.org.id, record_id=alert.id,
        kind="alert_location",
    )  # fmt: skip
    assert (where["latitude"], where["longitude"]) == (4.7, -74.2)
    assert kinds.count("location_added") == 1  # the desk hears of it once, not every update


async def test_a_live_location_shared_before_never_feeds_a_later_alert(desk: Desk) -> None:
    """R13: a location is given per alert. One shared for a report, or for an alert since
    called off, keeps updating (Telegram: up to 8 hours); a later alert must not take it."""
    alice = await onboard(desk)
    live = Location(4.6, -74.1, live=True)
    await alice.say("/alert")
    await alice.say(Event(location=live, chat_message_id="first"))
    await alice.say(Pick("no"))
    await alice.say(CANCEL_PIN)  # called off
    for said in ("/report", Pick("threat"), Pick("today")):
        await alice.say(said)
    await alice.say(Event(location=live, chat_message_id="report"))  # where it happened
    await alice.say("/cancel")
    await alice.say("/alert")
    await alice.say(Pick("skip"))  # no location for this one
    for message in ("first", "report"):
        await alice.say(Event(location=live, edited=True, chat_message_id=message))
    async with desk.sessions() as s:
        second = (await s.execute(select(Alert).where(Alert.open_key.is_not(None)))).scalar_one()
        told = select(AlertEvent.kind).where(AlertEvent.alert_id == second.id)
        kinds = (await s.execute(told)).scalars().all()
    assert second.location_sealed is None and "location_added" not in kinds


async def test_it_forgets_old_message_ids_and_unsent_evidence(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    await alice.say(Pick("me"))
    await alice.say("text")
    await alice.say(Pick("done"))
    await alice.say(Event(attachments=(InboundAttachment("voice", "audio/ogg", 4, b"OggS"),)))
    desk.clock.advance(days=4)
    assert await housekeeping(desk.sessions, desk.clock.now) == 1
    async with desk.sessions() as s:
        assert (await s.execute(select(SeenInbound))).first() is None
        assert (await s.execute(select(Evidence))).first() is None
    replay = await alice.say(Event(text="/alert", message_id="old"))
    assert "Alert sent." in replay[0].text


async def test_housekeeping_deletes_on_the_drivers_thread_not_the_event_loop(
    desk: Desk,
) -> None:
    """50,000 message ids due held the loop (bots, and in `amparo serve` the engine) for
    160 ms when SQLite ran the DELETE inline; asyncpg never runs a statement on the loop."""
    ran_on: dict[str, int] = {}  # statement -> the thread SQLite ran it on

    def trace(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        raw = dbapi_conn._connection._conn  # aiosqlite's sqlite3 connection
        raw.set_trace_callback(lambda sql: ran_on.setdefault(sql.split("(")[0], get_ident()))

    engine = desk.sessions.kw["bind"]
    async with transaction(desk.sessions) as s:
        s.add(SeenInbound(channel="console", key=b"k" * 32, seen_at=desk.clock.now))
    desk.clock.advance(days=4)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "checkout", trace)
    try:
        await housekeeping(desk.sessions, desk.clock.now)
    finally:
        if engine.dialect.name == "sqlite":
            event.remove(engine.sync_engine, "checkout", trace)
    async with desk.sessions() as s:
        assert (await s.execute(select(SeenInbound))).first() is None
    if engine.dialect.name == "sqlite":
        deletes = [t for sql, t in ran_on.items() if sql.startswith("DELETE FROM seen_inbound")]
        assert deletes and get_ident() not in deletes


async def test_a_message_id_is_remembered_for_72_hours_housekeeping_or_not(desk: Desk) -> None:
    """R2: a channel may deliver a message again long after (Telegram keeps an unconfirmed
    update for 24 h; signal-cli offers one again after a restart): within 72 h a repeat is
    nothing at all, even after the periodic forgetting has run. Here a repeated "/alert",
    once the desk had closed the alert, would open a second one."""
    alice = await onboard(desk)
    assert "Alert sent." in (await alice.say(Event(text="/alert", message_id="m-1")))[0].text
    async with transaction(desk.sessions) as s:
        first = (await s.execute(select(Alert))).scalar_one()
        await alert_handling.resolve(
            s, desk.vault, alert=first, outcome="false_alarm", actor="t", now=desk.clock.now
        )
    desk.clock.advance(hours=71, minutes=59)
    await housekeeping(desk.sessions, desk.clock.now)
    await alice.say(Event(text="/alert", message_id="m-1"))
    async with desk.sessions() as s:
        assert len((await s.execute(select(Alert))).all()) == 1
