"""Words typed during an open alert ("at the market on 5th street") reach the desk: sealed to
the organisation's key as a note on the alert, as a responder's notes are. Both backends."""

from __future__ import annotations

from sqlalchemy import select

from core.crypto import open_sealed
from core.db import transaction
from core.desk_alerts import NOTE_KIND
from core.models import Alert, AlertEvent, AlertNote, DeskGroup, OutboxMessage, Role
from tests.flows.conftest import CANCEL_PIN, Chat, Desk, Pick, onboard
from tests.flows.test_desk_chat import Group, group_code, linked

TOLD = "Your message was added to the alert. Only the desk can read it."


async def notes(desk: Desk) -> list[str]:
    """What the desk reads in the alert's notes, oldest first (opened with its key)."""
    async with desk.sessions() as s:
        found = (await s.execute(select(AlertNote).order_by(AlertNote.created_at))).scalars()
        return [
            open_sealed(
                desk.private_key, n.sealed, org_id=desk.org.id, record_id=n.id, kind=NOTE_KIND
            )["text"]
            for n in found
        ]


async def test_it_adds_words_typed_during_the_alert_to_it_for_the_desk(desk: Desk) -> None:
    """Review: a place typed at "share your location" got "Share your location with your
    messenger's location button, or skip", and what was typed later "Your alert is still
    on": the desk never saw a word of it."""
    alice = await onboard(desk)
    await alice.say("/alert")
    at_location = await alice.say("Plaza Bolívar, near the cathedral")
    assert TOLD in at_location[0].text and "Can you talk" in at_location[0].text
    assert at_location[0].delete_message_ids  # not left on the phone, as a report's words
    at_talk = await alice.text("they are outside")
    assert TOLD in at_talk and "Can you talk" in at_talk  # still asked
    await alice.say(Pick("no"))
    at_hold = await alice.say("two men, a grey van")
    assert TOLD in at_hold[0].text
    assert [c.key for c in at_hold[0].choices] == ["calloff"]
    clock = desk.clock.now
    assert await notes(desk) == [
        "Plaza Bolívar, near the cathedral",
        "they are outside",
        "two men, a grey van",
    ]
    async with desk.sessions() as s:
        (alert,) = (await s.execute(select(Alert))).scalars()
        events = await s.execute(select(AlertEvent).where(AlertEvent.kind == "note_added"))
        assert {(e.actor, e.at) for e in events.scalars()} == {("defender", clock)}
    assert "Alert called off." in await alice.text(CANCEL_PIN)  # still calls it off
    assert "Alert called off" not in str(await notes(desk))


async def test_it_does_not_take_pins_numbers_or_answers_for_words(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/alert")
    await alice.say(Pick("skip"))
    assert "Can you talk" in await alice.text("maybe")  # words, at a question: for the desk
    assert "Thank you" in await alice.text("no")  # the answer, not words for the desk
    for said in ("123", "12 34 56 78 90", "ok"):  # a number, a PIN mistyped, a bare yes
        assert "Your alert is still on." in await alice.text(said)
    assert "Send your PIN" in await alice.text(Pick("calloff"))
    assert "4 to 8 digits" in await alice.text("the van left")  # the PIN question: no words
    assert "Alert called off." in await alice.text(CANCEL_PIN)
    assert await notes(desk) == ["maybe"]
    assert "Sorry, I didn't understand" in await alice.text("hello again")  # no alert on
    assert await notes(desk) == ["maybe"]


async def test_it_keeps_the_phone_silent_in_discreet_mode(desk: Desk) -> None:
    """In discreet mode nothing on screen says an alert is on: words are answered as with no
    alert, and not taken for the desk (the phone may be in other hands); nor is the desk
    paged about them."""
    await linked(desk, Role.responder, "5550001")
    duty = Chat(desk, "5550001", "en", channel="telegram")
    alice = await onboard(desk)
    for said in ("/settings", Pick("discreet"), Pick("on"), Pick("1m")):
        await alice.say(said)
    await alice.say("/sos")
    assert "EMERGENCY" in str(await duty.received())  # the alert itself reached the desk
    assert TOLD not in await alice.text("they are here")
    assert await notes(desk) == []
    assert await duty.received() == []


async def test_it_tells_the_desk_a_message_was_added_but_never_what(desk: Desk) -> None:
    """Review: a defender's words were sealed on the alert, but no responder heard of it (a
    location shared pages the desk: core.alert_updates.add_location), so nobody looked. Now the
    same desk (on-duty responders, the group) hears of each one, at the alert's priority, in
    its own language, by the handle only: the words are sealed."""
    await linked(desk, Role.responder, "5550001")
    duty = Chat(desk, "5550001", "en", channel="telegram")
    group = Group(desk)
    assert "responder group" in await group.say("1", f"/desk {await group_code(desk)}")
    async with transaction(desk.sessions) as s:
        row = await s.get(DeskGroup, desk.org.id)
        assert row is not None
        row.locale = "es"
    alice = await onboard(desk)
    await alice.say("/alert")
    assert "EMERGENCY" in str(await duty.received())
    await group.heard()
    who = await alice.defender()
    assert who is not None
    await alice.say("Plaza Bolívar, near the cathedral")
    assert [m.text for m in await duty.received()] == [
        f"{who.handle} added a message to their alert. Open it in the desk."
    ]
    assert (
        await group.heard() == f"{who.handle} añadió un mensaje a su alerta. Ábrelo en el panel."
    )
    await alice.say(Pick("no"))
    await alice.say("two men, a grey van")  # each one, at any question
    assert len(await duty.received()) == 1
    async with desk.sessions() as s:
        rows = (
            await s.execute(
                select(OutboxMessage).where(OutboxMessage.idempotency_key.contains(":note"))
            )
        ).scalars()
        assert sorted((r.recipient, r.priority) for r in rows) == [
            ("group", 0),
            ("group", 0),
            ("responder", 0),
            ("responder", 0),
        ]  # P0, as the alert and its location
