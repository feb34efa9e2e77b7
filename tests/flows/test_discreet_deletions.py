"""What a defender's chat must not keep: in discreet mode a location, and a PIN even when it
comes as an edit (the bot deletes them, like any PIN, where the channel can)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.messages import Location, Outbound
from core.models import OutboxMessage
from core.outbox import payload
from flows import registry
from flows.engine import INGRESS_BURST
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Event, Pick, onboard


async def discreet(desk: Desk) -> Chat:
    alice = await onboard(desk)
    await alice.say("/settings")
    await alice.say(Pick("discreet"))
    await alice.say(Pick("on"))
    await alice.say(Pick("10m"))
    defender = await alice.defender()
    assert defender is not None and defender.discreet
    return alice


def deleted(replies: list[Outbound]) -> list[str]:
    return [i for r in replies for i in r.delete_message_ids]


@pytest.mark.parametrize("live", [False, True])
async def test_a_discreet_defender_s_location_after_an_alert_is_deleted(
    desk: Desk, live: bool
) -> None:
    alice = await discreet(desk)
    assert [r.text for r in await alice.say("/sos")] == ["OK."]
    shared = Event(location=Location(4.61, -74.08, live=live), chat_message_id="location-77")
    replies = await alice.say(shared)
    assert "Location received." in replies[0].text
    # Like a PIN: at once, with the reply. A live one stays while it shares: deleting its
    # message would stop the updates the desk follows the defender by. Its deletion is queued
    # for when it is over (tests/bot/test_telegram_live_location.py).
    reply, *later = replies
    assert deleted([reply]) == ([] if live else ["location-77"])
    assert deleted(later) == (["location-77"] if live else [])


async def test_a_location_stays_for_a_defender_not_in_discreet_mode(desk: Desk) -> None:
    alice = await onboard(desk)  # a live location must keep updating the alert
    await alice.say("/sos")
    shared = Event(location=Location(4.61, -74.08, live=True), chat_message_id="location-78")
    assert deleted(await alice.say(shared)) == []


@pytest.mark.parametrize("discreet_mode", [False, True])
async def test_a_pin_sent_as_an_edit_is_deleted(desk: Desk, discreet_mode: bool) -> None:
    alice = await discreet(desk) if discreet_mode else await onboard(desk)
    await alice.say("/sos")
    if not discreet_mode:
        await alice.say(Pick("skip"))
        await alice.say(Pick("no"))
    edit = Event(text=CANCEL_PIN, edited=True, chat_message_id="pin-9")
    replies = await alice.say(edit)
    assert deleted(replies) == ["pin-9"]
    assert "I don't read edited messages." in replies[0].text  # R3: not an answer
    assert "Alert called off." in await alice.text(CANCEL_PIN)  # a new message is


async def test_a_discreet_defender_s_report_location_is_deleted_and_never_asked_by_keyboard(
    desk: Desk,
) -> None:
    alice = await discreet(desk)
    await alice.say("/report")
    await alice.say(Pick("threat"))
    (where,) = await alice.say(Pick("today"))
    assert not where.request_location  # no reply keyboard left on a discreet phone
    shared = Event(location=Location(4.61, -74.08), chat_message_id="location-79")
    assert deleted(await alice.say(shared)) == ["location-79"]


@pytest.mark.parametrize("typed", [CANCEL_PIN, DURESS_PIN])
async def test_calling_the_alert_off_leaves_its_live_location_as_the_duress_pin_would(
    desk: Desk, typed: str
) -> None:
    """R8: the duress PIN leaves the alert on, and the live location shared for it sharing
    (its deletion still due when its hour is over); the cancel PIN must look the same on the
    phone, so calling the alert off does not bring that deletion forward (a desk resolving it
    does: tests/bot/test_telegram_live_location.py)."""
    alice = await discreet(desk)
    await alice.say("/sos")
    where = Location(4.61, -74.08, live=True, live_period=3600)
    await alice.say(Event(location=where, chat_message_id="location-80"))
    ends = desk.clock.now + timedelta(hours=1)
    desk.clock.advance(minutes=5)
    replies = await alice.say(Event(text=typed, chat_message_id="pin-80"))
    assert deleted(replies) == ["pin-80"]
    async with desk.sessions() as s:
        stmt = select(OutboxMessage.next_attempt_at).where(
            OutboxMessage.idempotency_key.startswith("del:live:")
        )
        assert list((await s.execute(stmt)).scalars()) == [ends]


async def forgotten(desk: Desk) -> dict[str, datetime]:
    """The defender's own messages queued for deletion: message id -> when."""
    async with desk.sessions() as s:
        rows = await s.execute(
            select(OutboxMessage).where(OutboxMessage.idempotency_key.startswith("del:in:"))
        )
        return {
            i: row.next_attempt_at.replace(tzinfo=UTC)
            for row in rows.scalars()
            for i in payload(desk.vault, row).delete_message_ids
        }


@pytest.mark.parametrize("discreet_mode", [False, True])
async def test_on_telegram_what_a_defender_sends_leaves_the_chat_within_a_day(
    desk: Desk, discreet_mode: bool
) -> None:
    """R12: the defender's "/checkin" goes a day later (discreet mode: after their delay);
    a PIN at once, with the reply, and only so. Not on a channel with its own timer."""
    alice = await onboard(desk, "alice", channel="telegram")
    if discreet_mode:
        for said in ("/settings", Pick("discreet"), Pick("on"), Pick("10m")):
            await alice.say(said)
    bob = await onboard(desk, "bob", channel="signal")
    before = await forgotten(desk)
    sent_at = desk.clock.now
    await alice.say(Event(text="/checkin", chat_message_id="tg-501"))
    await bob.say(Event(text="/checkin", chat_message_id="sg-501"))
    later = timedelta(minutes=10) if discreet_mode else timedelta(days=1)
    assert {k: v for k, v in (await forgotten(desk)).items() if k not in before} == {
        "tg-501": sent_at + later
    }
    await alice.say(Event(text="/sos", chat_message_id="tg-502"))
    assert deleted(await alice.say(Event(text=CANCEL_PIN, chat_message_id="tg-503"))) == ["tg-503"]
    assert "tg-502" in await forgotten(desk) and "tg-503" not in await forgotten(desk)


async def test_on_telegram_a_message_answered_by_the_fallback_leaves_the_chat_too(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R12 off the main path: a message whose flow failed ("something went wrong") stays in
    the chat no longer than one handled normally."""
    alice = await onboard(desk, "alice", channel="telegram")
    spec = registry.get("panic")
    assert spec is not None

    async def broken(ctx: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setitem(spec.states, "start", broken)
    sent_at = desk.clock.now
    replies = await alice.say(Event(text="/alert", chat_message_id="tg-601"))
    assert "something went wrong" in replies[0].text
    assert (await forgotten(desk)).get("tg-601") == sent_at + timedelta(days=1)


async def test_on_telegram_the_message_told_it_came_too_fast_leaves_the_chat_too(
    desk: Desk,
) -> None:
    """R12 off the main path: the message that got "faster than we can read" (R21) is not
    read, but it is in the chat all the same."""
    alice = await onboard(desk, "alice", channel="telegram")
    told_at = None
    for i in range(INGRESS_BURST + 5):
        sent_at = desk.clock.now
        said = await alice.text(Event(text=f"hello {i}", chat_message_id=f"tg-7{i:02d}"))
        if "faster than we can read" in said:
            told_at = (f"tg-7{i:02d}", sent_at)
            break
    assert told_at is not None
    message_id, sent_at = told_at
    assert (await forgotten(desk)).get(message_id) == sent_at + timedelta(days=1)
