"""The alert: raised at the first message, and duress indistinguishable from a cancel."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from core import pins
from core.crypto import open_sealed
from core.messages import Location, Outbound
from core.models import Alert, AlertKind, AlertState, Defender
from flows import router
from tests.flows.conftest import (
    CANCEL_PIN,
    DURESS_PIN,
    Chat,
    Desk,
    Event,
    Pick,
    onboard,
    run_dialog,
)


async def alerts(desk: Desk) -> list[Alert]:
    async with desk.sessions() as s:
        return list((await s.execute(select(Alert).order_by(Alert.created_at))).scalars())


async def test_it_raises_the_alert_before_asking_anything(desk: Desk) -> None:
    alice = await onboard(desk)
    replies = await alice.say("/alert")
    (raised,) = await alerts(desk)
    assert raised.kind is AlertKind.panic and raised.state is AlertState.triggered
    assert "Alert sent." in replies[0].text and replies[0].request_location


@pytest.mark.parametrize("typed", ["SOS", "sos!", "/pánico", "/panico", "/panique", "/pânico"])
async def test_it_takes_a_bare_sos_and_panic_in_each_language(desk: Desk, typed: str) -> None:
    """Someone in danger types what comes first, in the middle of anything (review: "SOS"
    without the slash answered "I didn't understand", and mid-dialog was taken as an answer)."""
    alice = await onboard(desk)
    await alice.say("/report")  # mid-dialog
    replies = await alice.say(typed)
    assert "Alert sent." in replies[0].text
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic]


@pytest.mark.parametrize("typed", ["النجدة", "النجدة!", "نجدة", "النَّجدة", "النجـــدة", "/نجدة"])
async def test_it_takes_the_arabic_cry_for_rescue(desk: Desk, typed: str) -> None:
    """An Arabic speaker in danger types the cry for rescue, not a Latin command; with
    diacritics, a kashida or an exclamation mark, and in the middle of a report."""
    alice = await onboard(desk, language="ar")
    await alice.say("/report")
    replies = await alice.say(typed)
    assert "أُرسل التنبيه" in replies[0].text
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic]


async def test_help_in_arabic_is_not_an_alert(desk: Desk) -> None:
    """ "مساعدة" is the word for the help text: it must not raise an alert."""
    alice = await onboard(desk, language="ar")
    await alice.say("مساعدة")
    assert await alerts(desk) == []


async def test_it_runs_a_panic_dialog_in_english(desk: Desk) -> None:
    alice = await onboard(desk)
    await run_dialog(
        alice,
        [
            (Pick("panic"), "Alert sent. The desk and your trusted contacts are being told now."),
            ("...", "Share your location with your messenger's location button, or skip."),
            (Event(location=Location(4.61, -74.08)), "Can you talk on the phone right now?"),
            (Pick("no"), "call it off with your PIN"),
            ("what now", "Your message was added to the alert."),  # for the desk
            ("...", "Your alert is still on."),
        ],
    )
    (alert,) = await alerts(desk)
    assert alert.location_sealed is not None
    where = open_sealed(
        desk.private_key,
        alert.location_sealed,
        org_id=desk.org.id,
        record_id=alert.id,
        kind="alert_location",
    )
    assert (where["latitude"], where["longitude"]) == (4.61, -74.08)
    await run_dialog(
        alice,
        [
            ("cancel", "Send your PIN to call off the alert."),
            (CANCEL_PIN, "Alert called off."),
        ],
    )
    (alert,) = await alerts(desk)
    assert alert.state is AlertState.resolved and alert.outcome == "false_alarm"
    assert alert.location_sealed is None  # kept only while the alert is open


async def test_it_takes_the_code_phrase_from_the_middle_of_a_report(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/settings")
    await alice.say(Pick("phrases"))
    await alice.say(CANCEL_PIN)
    await alice.say(Pick("alert_phrase"))
    await alice.say("Is the bakery open?")
    await alice.say("/report")
    await alice.say(Pick("threat"))
    replies = await alice.say("  is the BAKERY open? ")
    assert "Alert sent." in replies[0].text
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic]


async def test_it_raises_one_alert_for_a_message_delivered_ten_times(desk: Desk) -> None:
    alice = await onboard(desk)
    same = Event(text="/alert", message_id="update-77")
    await asyncio.gather(*(alice.say(same) for _ in range(10)))
    assert len(await alerts(desk)) == 1
    assert await alice.received() == []  # the one reply was already counted
    await alice.say(same)
    assert len(await alerts(desk)) == 1


async def visible_after(desk: Desk, chat: Chat, pin: str) -> list[Outbound]:
    await chat.say("/alert")
    await chat.say(Pick("skip"))
    await chat.say(Pick("yes"))
    await chat.say(Pick("calloff"))
    return await chat.say(pin)


async def test_it_answers_a_duress_pin_exactly_like_the_cancel_pin(desk: Desk) -> None:
    calm, forced = await onboard(desk, "calm"), await onboard(desk, "forced")
    after_cancel = await visible_after(desk, calm, CANCEL_PIN)
    after_duress = await visible_after(desk, forced, DURESS_PIN)
    assert after_cancel == after_duress  # text, choices, sensitivity, deletions: byte for byte
    assert after_cancel[0].delete_message_ids  # the PIN is deleted from the chat in both cases
    desk.clock.advance(hours=2)  # and nothing different follows later either
    assert await calm.received() == await forced.received() == []
    by_defender: dict[str, list[Alert]] = {}
    async with desk.sessions() as s:
        for alert in (await s.execute(select(Alert))).scalars():
            defender = await s.get(Defender, alert.defender_id)
            assert defender is not None
            by_defender.setdefault(defender.handle, []).append(alert)
    kinds = sorted(sorted(str(a.kind) for a in found) for found in by_defender.values())
    assert kinds == [["duress", "panic"], ["panic"]]
    duress = next(a for found in by_defender.values() for a in found if a.kind is AlertKind.duress)
    assert duress.do_not_contact and duress.state is AlertState.triggered


async def test_it_escalates_repeated_wrong_pins_silently(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/alert")
    await alice.say(Pick("skip"))
    await alice.say(Pick("no"))
    shown = [await alice.text(f"{n:04d}") for n in range(1000, 1010)]
    assert all("lock" not in s.lower() and "too many" not in s.lower() for s in shown)
    assert "not right" in shown[0] and "not right" in shown[1]
    assert shown[2] == "Alert called off. Everyone who was told will hear it was a false alarm."
    kinds = sorted(str(a.kind) for a in await alerts(desk))
    assert kinds == ["duress", "panic"]


async def test_it_says_only_ok_in_discreet_mode(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/settings")
    await alice.say(Pick("discreet"))
    await alice.say(Pick("on"))
    menu = await alice.say("menu")
    assert "panic" not in [c.key for c in menu[0].choices]
    replies = await alice.say("/sos")
    assert [r.text for r in replies] == ["OK."] and replies[0].sensitive
    assert not replies[0].request_location
    assert "Alert called off." in await alice.text(CANCEL_PIN)


async def test_it_runs_a_panic_dialog_in_spanish(desk: Desk) -> None:
    ana = await onboard(desk, "ana", language="es")
    await run_dialog(
        ana,
        [
            ("/alerta", "Alerta enviada."),
            (Pick("skip"), "¿Puedes hablar por teléfono ahora mismo?"),
            (Pick("yes"), "puedes anularla con tu PIN"),
            ("cancelar", "Envía tu PIN para anular la alerta."),
            ("٤٨٢٦", "Alerta anulada."),
        ],
    )


async def test_typos_days_apart_never_add_up_to_a_duress_alert(desk: Desk) -> None:
    """One wrong PIN now and then (a typo at a check-in) is not a captor trying PINs: only
    WRONG_LIMIT wrong in a row, each within a day of the one before, reads as duress."""
    alice = await onboard(desk)
    for _day in range(4):
        assert "Send your PIN" in await alice.text("/safe")
        assert "not right" in await alice.text("9999")
        assert "noted that you are safe" not in await alice.text("/menu")
        desk.clock.advance(hours=25)
    assert await alerts(desk) == []
    for _try in range(2):  # a captor's tries, minutes apart, still end in the silent alert
        assert "Send your PIN" in await alice.text("/safe")
        assert "not right" in await alice.text("9999")
        desk.clock.advance(minutes=2)
    assert "Send your PIN" in await alice.text("/safe")
    assert "noted that you are safe" in await alice.text("9999")
    assert [str(a.kind) for a in await alerts(desk)] == ["duress"]


async def test_the_duress_pin_typed_with_no_question_still_raises_the_silent_alert(
    desk: Desk,
) -> None:
    """On a captor's order, after the PIN's question had closed: the duress PIN raises the
    silent alert, and the phone sees what the real PIN gets there (the same words)."""
    alice = await onboard(desk)
    assert "Send your PIN" in await alice.text("/safe")
    desk.clock.advance(hours=2)  # the question closed after a long silence
    real = await alice.say(CANCEL_PIN)
    assert await alerts(desk) == []
    assert "Send your PIN" in await alice.text("/safe")
    desk.clock.advance(hours=2)
    forced = await alice.say(DURESS_PIN)
    assert [r.text for r in forced] == [r.text for r in real]
    (duress,) = await alerts(desk)
    assert duress.kind is AlertKind.duress and duress.do_not_contact
    idle = [r.text for r in await alice.say(CANCEL_PIN)]  # idle, nothing expired: the same
    assert [r.text for r in await alice.say(DURESS_PIN)] == idle
    assert [str(a.kind) for a in await alerts(desk)] == ["duress"]  # still the one open


async def test_a_pin_answering_no_question_is_checked_outside_the_transaction(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Argon2id is slow: checked while the event's transaction (and on SQLite the write lock)
    is held, every other writer would wait for it, a panic included."""
    alice = await onboard(desk)
    inside, held = [False], []
    real_check, real_handle = pins.check, router.handle

    def check(*args: Any) -> pins.Verdict:
        held.append(inside[0])
        return real_check(*args)

    async def handle(event: Any) -> None:  # the engine runs it inside the transaction
        inside[0] = True
        try:
            await real_handle(event)
        finally:
            inside[0] = False

    monkeypatch.setattr(pins, "check", check)
    monkeypatch.setattr(router, "handle", handle)
    await alice.say(DURESS_PIN)  # nothing in progress
    assert held == [False]
    assert [str(a.kind) for a in await alerts(desk)] == ["duress"]
