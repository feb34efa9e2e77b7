"""Roll-call answers: a button or a typed word, recorded once, replaced until closing; "I need
help" alerts the desk; a panic, a check-in's "I'm safe" and a PIN keep their priority."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from sqlalchemy import select, update

from core import alerts, rollcalls, webhook_secrets, webhooks
from core.db import transaction
from core.models import (
    Alert,
    AlertEvent,
    AlertKind,
    Broadcast,
    BroadcastRecipient,
    Defender,
)
from core.sweep import Sweep
from tests.flows.conftest import CANCEL_PIN, Chat, Desk, Pick, onboard
from tests.flows.test_report_webhook import add_hook, dispatcher
from tests.standins.http_receiver import Receiver

TEXT = "Police raid at the office. Everyone check in now."


async def start(desk: Desk, minutes: int = 60) -> uuid.UUID:
    desk.clock.advance(seconds=5)
    async with transaction(desk.sessions) as s:
        r = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.org.id,
            text=TEXT,
            closes_in=timedelta(minutes=minutes),
            actor="responder:test",
            now=desk.clock.now,
        )
    desk.clock.advance(seconds=5)
    return r.id


async def answer_of(desk: Desk, chat: Chat, rollcall_id: uuid.UUID) -> str | None:
    defender = await chat.defender()
    assert defender is not None
    async with desk.sessions() as s:
        found: str | None = await s.scalar(
            select(BroadcastRecipient.answer).where(
                BroadcastRecipient.broadcast_id == rollcall_id,
                BroadcastRecipient.defender_id == defender.id,
            )
        )
    return found


async def panics(desk: Desk) -> list[tuple[Alert, list[str]]]:
    async with desk.sessions() as s:
        found = list((await s.scalars(select(Alert).where(Alert.kind == AlertKind.panic))).all())
        return [
            (
                a,
                list(await s.scalars(select(AlertEvent.kind).where(AlertEvent.alert_id == a.id))),
            )
            for a in found
        ]


async def test_it_asks_each_defender_in_their_language_with_two_answers(desk: Desk) -> None:
    alice = await onboard(desk)
    bruno = await onboard(desk, "bruno", language="es")
    rollcall_id = await start(desk)
    (to_alice,) = await alice.received()
    (to_bruno,) = await bruno.received()
    assert to_alice.text == f"Message from your protection desk:\n\n{TEXT}"
    assert [c.label for c in to_alice.choices] == ["I'm safe", "I need help"]
    assert to_bruno.text.startswith("Mensaje de tu equipo de protección:")
    assert [c.label for c in to_bruno.choices] == ["Estoy bien", "Necesito ayuda"]
    assert [c.key for c in to_bruno.choices] == [
        f"rollcall:safe:{rollcall_id.hex}",
        f"rollcall:help:{rollcall_id.hex}",
    ]


async def test_a_button_answer_is_recorded_and_a_later_one_replaces_it(desk: Desk) -> None:
    alice = await onboard(desk)
    rollcall_id = await start(desk)
    await alice.received()
    (asked,) = await alice.say(Pick(f"rollcall:safe:{rollcall_id.hex}"))
    assert asked.text == "Send your PIN to confirm."  # R11: "I'm safe" takes the PIN
    assert await answer_of(desk, alice, rollcall_id) is None
    (ack,) = await alice.say(CANCEL_PIN)
    assert ack.text == "Thank you: your answer “I'm safe” was recorded."
    assert ack.choices == ()  # the question is over; the answer may still change:
    assert await answer_of(desk, alice, rollcall_id) == "safe"
    assert await panics(desk) == []
    (ack,) = await alice.say(Pick(f"rollcall:help:{rollcall_id.hex}"))
    assert ack.text == "Your protection desk has been told that you need help."
    assert await answer_of(desk, alice, rollcall_id) == "help"
    ((alert, events),) = await panics(desk)  # the desk's alert, the roll-call on its timeline
    assert "rollcall_help" in events and "triggered" in events
    await alice.say(Pick(f"rollcall:help:{rollcall_id.hex}"))  # again: no second alert
    ((again, events),) = await panics(desk)
    assert again.id == alert.id and events.count("rollcall_help") == 1


async def test_typed_answers_count_in_the_defenders_language(desk: Desk) -> None:
    bruno = await onboard(desk, "bruno", language="es")
    rollcall_id = await start(desk)
    await bruno.received()
    assert "PIN" in await bruno.text("Estoy bien")  # R11: typed, it takes the PIN too
    assert await answer_of(desk, bruno, rollcall_id) is None
    replies = await bruno.say(CANCEL_PIN)
    assert "«Estoy bien»" in replies[0].text
    assert await answer_of(desk, bruno, rollcall_id) == "safe"
    await bruno.say("necesito ayuda")
    assert await answer_of(desk, bruno, rollcall_id) == "help"
    assert "PIN" in await bruno.text("seguro")  # replaced again while it is open
    await bruno.say(CANCEL_PIN)
    assert await answer_of(desk, bruno, rollcall_id) == "safe"


async def test_a_panic_during_a_rollcall_is_a_panic(desk: Desk) -> None:
    alice = await onboard(desk)
    rollcall_id = await start(desk)
    await alice.received()
    replies = await alice.say("/sos")
    assert "Alert sent." in replies[0].text
    assert await answer_of(desk, alice, rollcall_id) is None


async def test_a_typed_im_safe_answers_a_waiting_checkin_first(desk: Desk) -> None:
    alice = await onboard(desk)
    defender = await alice.defender()
    assert defender is not None
    rollcall_id = await start(desk)
    await alice.received()
    async with transaction(desk.sessions) as s:
        d = await s.get(Defender, defender.id)
        assert d is not None
        await alerts.raise_alert(
            s, desk.vault, defender=d, kind=AlertKind.missed_checkin, now=desk.clock.now
        )
    await alice.received()
    replies = await alice.say("1")
    assert "PIN" in replies[-1].text  # the check-in's question, not the roll-call's thanks
    assert await answer_of(desk, alice, rollcall_id) is None
    await alice.say(CANCEL_PIN)
    await alice.say("I need help")  # "help" is no check-in's: the roll-call's
    assert await answer_of(desk, alice, rollcall_id) == "help"


async def test_help_with_no_rollcall_is_still_the_help(desk: Desk) -> None:
    alice = await onboard(desk)
    replies = await alice.say("help")
    assert "Here is what you can send:" in replies[0].text
    assert await panics(desk) == []


async def test_an_answer_after_closing_is_told_so(desk: Desk) -> None:
    alice = await onboard(desk)
    rollcall_id = await start(desk, minutes=30)
    await alice.received()
    desk.clock.advance(minutes=31)
    (late,) = await alice.say(Pick(f"rollcall:safe:{rollcall_id.hex}"))
    assert late.text == "This roll-call has closed; your answer was not recorded. Thank you."
    (late,) = await alice.say("I need help")
    assert "has closed, but your protection desk has been told" in late.text
    assert await answer_of(desk, alice, rollcall_id) is None
    ((_alert, events),) = await panics(desk)  # a late "I need help" is never lost
    assert "rollcall_help" in events


async def test_an_answer_to_a_rollcall_closed_early_is_told_so(desk: Desk) -> None:
    alice = await onboard(desk)
    rollcall_id = await start(desk)
    await alice.received()
    async with transaction(desk.sessions) as s:
        await s.execute(
            update(Broadcast).where(Broadcast.id == rollcall_id).values(closed_at=desk.clock.now)
        )
    (late,) = await alice.say("safe")
    assert "has closed" in late.text
    assert await answer_of(desk, alice, rollcall_id) is None


async def test_closing_tells_the_desks_webhook_the_counts_signed(desk: Desk) -> None:
    alice = await onboard(desk)
    bruno = await onboard(desk, "bruno", language="es")
    async with Receiver() as ours, webhooks.client() as http:
        secret = await add_hook(desk, ours.url())
        rollcall_id = await start(desk, minutes=30)
        await alice.say(Pick(f"rollcall:help:{rollcall_id.hex}"))
        desk.clock.advance(minutes=31)
        assert await Sweep(desk.sessions, desk.vault, owner="w").run(desk.clock.now) >= 1
        await dispatcher(desk, http).drain(desk.clock.now)
    [hit] = [h for h in ours.hits if json.loads(h.body)["type"] == "rollcall.closed"]
    assert webhook_secrets.verify(
        hit.headers["Amparo-Signature"],
        hit.body,
        [secret.encode()],
        now=desk.clock.now.timestamp(),
    )
    body = json.loads(hit.body)
    assert hit.headers["Amparo-Event-Id"] == body["event_id"]
    assert (body["dedup_key"], body["org"], body["alert"]) == (
        f"rollcall:{rollcall_id}",
        str(desk.org.id),
        None,
    )
    tally = {k: body["rollcall"][k] for k in ("recipients", "safe", "help", "unanswered")}
    assert tally == {"recipients": 2, "safe": 0, "help": 1, "unanswered": 1}
    assert TEXT.encode() not in hit.body
    for chat in (alice, bruno):
        person = await chat.defender()
        assert person is not None and person.handle.encode() not in hit.body
    # and the desk heard of alice's "I need help" as an alert on the same webhook
    assert any(json.loads(h.body)["type"] == "alert.triggered" for h in ours.hits)
