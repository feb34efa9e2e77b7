"""Found in a fresh-eyes review of the defenders' conversations (both backends)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from core import i18n
from core.crypto import open_sealed
from core.db import transaction
from core.defenders import save_settings
from core.messages import Outbound
from core.models import AlertEvent, AlertKind, CheckIn, Defender, Report
from flows import engine as engine_module
from flows import registry, words
from tests.flows.conftest import (
    CANCEL_PIN,
    DURESS_PIN,
    ONBOARDING,
    Chat,
    Desk,
    Pick,
    onboard,
)
from tests.flows.test_flow_review import _reminded_mid_report
from tests.flows.test_panic import alerts
from tests.flows.test_report import CANARY, sealed_parts


@pytest.mark.parametrize("typed", ["/safe", "/SAFE"])
async def test_safe_typed_in_the_middle_of_a_report_keeps_the_report(
    desk: Desk, typed: str
) -> None:
    """The timer's own words say "When you are safe, send /safe": typed while a report is
    being written, it is the "I'm safe" button, and the report is set aside, not dropped."""
    alice = await onboard(desk)
    for said in ("/report", Pick("raid"), Pick("yesterday"), "Barrio Santa Fe", Pick("police")):
        await alice.say(said)
    for said in (Pick("me_and_others"), "4", CANARY):
        await alice.say(said)
    assert "Send your PIN" in await alice.text(typed)
    back = await alice.say(CANCEL_PIN)
    assert "noted that you are safe" in " ".join(r.text for r in back)
    assert [c.key for c in back[-1].choices] == ["done"]  # the account's question again
    for more in (Pick("done"), Pick("done"), Pick("anonymous"), Pick("urgent"), Pick("send")):
        await alice.say(more)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    assert sealed_parts(desk, filed) == [{"place": "Barrio Santa Fe"}, {"text": CANARY}]


async def _phrase(chat: Chat, which: str, phrase: str) -> str:
    for said in ("/settings", Pick("phrases"), CANCEL_PIN, Pick(which)):
        await chat.say(said)
    return await chat.text(phrase)


@pytest.mark.parametrize(
    ("phrase", "typed"),
    [
        ("Is the bakery open?", "is the bakery open"),
        ("Is the bakery open?", "Is the bakery open."),
        ("¿Está abierta la panadería?", "Esta abierta la panaderia"),
        ("Le pain est prêt ?", "le pain est prêt?"),
        ("I'm home now", "I’m home now!"),
        ("هل المخبز مفتوح؟", "هل المخبز مفتوح"),
    ],
)
@pytest.mark.parametrize("discreet", [False, True])
async def test_the_code_phrase_raises_the_alert_typed_without_its_punctuation(
    desk: Desk, phrase: str, typed: str, discreet: bool
) -> None:
    """The alert phrase typed in a hurry, its question mark left out or a full stop added
    (the example the bot gives is "Is the bakery open?"): it raises the alert all the same.
    In discreet mode it is the only way to raise one."""
    alice = await onboard(desk)
    if discreet:
        for said in ("/settings", Pick("discreet"), Pick("on"), Pick("10m")):
            await alice.say(said)
    assert "Saved." in await _phrase(alice, "alert_phrase", phrase)
    await alice.say("/report")  # mid-dialog too
    shown = await alice.text(typed)
    assert shown == "OK." if discreet else "Alert sent." in shown
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic]


async def test_the_safe_phrase_is_read_without_its_punctuation(desk: Desk) -> None:
    alice = await onboard(desk)
    assert "Saved." in await _phrase(alice, "safe_phrase", "The tea is ready.")
    assert "Send your PIN" in await alice.text("the tea is ready")


@pytest.mark.parametrize("phrase", ["Help!", "¡Ok!", "12-34", "a?", "/weather"])
async def test_a_phrase_that_would_be_read_as_a_word_or_a_pin_is_refused(
    desk: Desk, phrase: str
) -> None:
    """Compared without punctuation, "Help!" would take "help" and "12-34" the PIN 1234."""
    alice = await onboard(desk)
    assert "not a command" in await _phrase(alice, "alert_phrase", phrase)


async def test_punctuation_alone_or_a_number_is_not_the_phrase(desk: Desk) -> None:
    """A phrase kept from before (an exact match only then) is never met by a word that
    already means something, a number or a message of other punctuation."""
    alice = await onboard(desk)
    defender = await alice.defender()
    assert defender is not None
    async with transaction(desk.sessions) as s:
        row = await s.get(Defender, defender.id)
        assert row is not None
        save_settings(desk.vault, row, {"alert_phrase": "help!", "safe_phrase": "?!"})
    for typed in ("help", "...", "¿?"):
        await alice.say(typed)
    assert await alerts(desk) == []
    assert "Alert sent." in await alice.text("help!")  # the phrase itself, as always


@pytest.mark.parametrize(
    ("language", "typed", "can_talk"),
    [("es", "sí", True), ("es", "Si", True), ("fr", "non", False), ("fr", "oui", True),
     ("pt", "não", False), ("pt", "sim", True), ("ar", "لا", False), ("ar", "نعم", True)],
)  # fmt: skip
async def test_can_you_talk_takes_a_plain_yes_or_no_in_the_defenders_language(
    desk: Desk, language: str, typed: str, can_talk: bool
) -> None:
    """After an alert, "Can you talk on the phone right now?" answered with a bare yes or no
    in the defender's language (Signal numbers its options; under stress people type the
    word): the answer reaches the alert, not "Please pick one of the options"."""
    alice = await onboard(desk, language=language, channel="signal")
    await alice.say("/sos")
    await alice.say(Pick("skip"))
    back = await alice.say(typed)
    assert [c.key for c in back[-1].choices] == ["calloff"], back  # the next question
    async with desk.sessions() as s:
        told = (
            await s.execute(select(AlertEvent.detail).where(AlertEvent.kind == "can_talk"))
        ).scalar_one()
    assert told == {"can_talk": can_talk}


SAFE_AS_TYPED = ["im safe", "Im safe.", "“I'm safe”", "I’m safe!", "1."]


@pytest.mark.parametrize("typed", SAFE_AS_TYPED)
async def test_im_safe_typed_as_people_type_it_is_the_option(desk: Desk, typed: str) -> None:
    """The reminder says: Choose “I'm safe” and enter your PIN. Typed without the
    apostrophe, with a full stop, or quoted as the reminder quotes it, it is that option."""
    alice = await onboard(desk, channel="signal")
    assert "Send your PIN to confirm." in await alice.text(typed)


@pytest.mark.parametrize("typed", SAFE_AS_TYPED)
async def test_im_safe_typed_as_people_type_it_answers_a_reminder_mid_report(
    desk: Desk, typed: str
) -> None:
    """The same after a reminder that came in the middle of a report: not sealed into the
    report as its account, not a check-in lost."""
    alice = await _reminded_mid_report(desk)
    assert "Send your PIN to confirm." in await alice.text(typed)
    assert "We noted that you are safe." in await alice.text(CANCEL_PIN)


@pytest.mark.parametrize(
    ("language", "typed"), [("es", "/cancelar"), ("pt", "/cancelar"), ("pt", "/parar")]
)
async def test_cancel_as_a_command_in_spanish_or_portuguese_stops_a_report(
    desk: Desk, language: str, typed: str
) -> None:
    """ "/alerta", "/ayuda" and "/annuler" are commands; "/cancelar" was not: typed while
    writing a report it was sealed into the account as its words."""
    alice = await onboard(desk, language=language)
    for said in ("/report", Pick("raid"), Pick("yesterday"), Pick("skip"), Pick("police")):
        await alice.say(said)
    await alice.say(Pick("me"))
    discarded = i18n.gettext(language)("Report discarded. Nothing was sent.")
    assert discarded in await alice.text(typed)


@pytest.mark.parametrize(
    "start",
    [("/checkin",), ("/report",), ("/settings",), ("/report", Pick("threat"), Pick("today"))],
)
async def test_the_duress_pin_typed_at_a_question_that_takes_no_pin_raises_the_alert(
    desk: Desk, start: tuple[str | Pick, ...]
) -> None:
    """On a captor's order ("tell them you are safe"), the duress PIN typed while the bot
    waits for something else (the check-in menu, a report's question): the silent alert is
    raised, as with no question at all, and the phone sees what the real PIN gets there."""
    calm, forced = await onboard(desk, "calm"), await onboard(desk, "forced")
    for chat in (calm, forced):
        for said in start:
            await chat.say(said)
    real, duress = await calm.say(CANCEL_PIN), await forced.say(DURESS_PIN)
    assert [(r.text, r.choices) for r in duress] == [(r.text, r.choices) for r in real]
    (alert,) = await alerts(desk)
    assert alert.kind is AlertKind.duress and alert.do_not_contact
    assert alert.defender_id == (await forced.defender()).id  # type: ignore[union-attr]


async def test_choosing_a_new_pin_equal_to_the_duress_pin_raises_nothing(desk: Desk) -> None:
    """Where a new PIN is chosen, a PIN typed is not one being used."""
    alice = await onboard(desk)
    for said in ("/settings", Pick("pins"), CANCEL_PIN, Pick("duress"), DURESS_PIN):
        await alice.say(said)
    assert "PIN changed." in await alice.text(DURESS_PIN)
    assert await alerts(desk) == []


@pytest.mark.parametrize(
    ("language", "typed"),
    [("en", "at 8:30"), ("ar", "الساعة ٨:٣٠"), ("fr", "20h30"), ("pt", "20h30")],
)
async def test_a_timer_until_8_30_set_in_the_afternoon_is_for_tonight(
    desk: Desk, language: str, typed: str
) -> None:
    """English and Arabic clocks run 1 to 12: "at 8:30" typed at 10 am (Bogotá) is 8:30 pm
    today, the deadline the defender means, not 8:30 am tomorrow (a day's escalation late);
    "20h30" in French or Portuguese is 20:30 too, not a timer of 20 and a half hours."""
    alice = await onboard(desk, language=language)
    for said in ("/checkin", Pick("custom")):
        await alice.say(said)
    await alice.say(typed)
    async with desk.sessions() as s:
        (due,) = (await s.execute(select(CheckIn.due_at))).scalars()
    assert due.replace(tzinfo=UTC) == datetime(2026, 5, 5, 1, 30, tzinfo=UTC)  # 20:30 there


@pytest.mark.parametrize(
    "typed",
    ["SOS SOS", "sos sos sos!", "SOS, SOS", "🆘", "🆘🆘", "SOS 🆘", "نجدة نجدة", "النجدة، النجدة"],
)
async def test_sos_repeated_or_as_its_emoji_raises_the_alert(desk: Desk, typed: str) -> None:
    """Someone in danger repeats the cry, or taps the SOS emoji: a bare "SOS" raised the
    alert, "SOS SOS" or "🆘" got "Sorry, I didn't understand that" (or went into the report
    being written)."""
    alice = await onboard(desk)
    await alice.say("/report")
    assert "Alert sent." in await alice.text(typed)
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic]


def test_a_repeated_alert_word_is_no_code_phrase() -> None:
    """(Typed, it raises the alert before a phrase step could read it.)"""
    assert words.reserved("sos sos") and words.reserved("🆘") and words.reserved("SOS, SOS")
    assert not words.reserved("so so") and not words.reserved("sossy")


async def _discreet(desk: Desk, name: str) -> Chat:
    chat = await onboard(desk, name)
    for said in ("/settings", Pick("discreet"), Pick("on"), Pick("10m")):
        await chat.say(said)
    return chat


async def test_a_wrong_pin_in_discreet_mode_never_says_an_alert_is_on(desk: Desk) -> None:
    """After the code phrase a discreet phone shows "OK." and nothing else says an alert is
    on; a wrong PIN typed then (whoever holds the phone trying one) got "That PIN is not
    right", where a phone with no alert answers "Sorry, I didn't understand that". It is
    answered as there, and still counted as a wrong PIN."""
    alice, calm = await _discreet(desk, "alice"), await _discreet(desk, "calm")
    assert [r.text for r in await alice.say("/sos")] == ["OK."]
    shown, usual = await alice.say("5555"), await calm.say("5555")
    assert "PIN" not in "\n".join(m.text for m in shown), shown

    def seen(replies: list[Outbound]) -> list[tuple[object, ...]]:  # each chat's own ids
        return [(r.text, r.choices, r.sensitive, len(r.delete_message_ids)) for r in replies]

    assert seen(shown) == seen(usual)
    defender = await alice.defender()
    assert defender is not None and defender.failed_pins == 1
    assert "Alert called off." in await alice.text(CANCEL_PIN)  # the PIN still calls it off


@pytest.mark.parametrize("said", ["help", "?", "/ayuda"])
async def test_help_in_discreet_mode_never_says_something_is_in_progress(
    desk: Desk, said: str
) -> None:
    """Help while a discreet alert is on said "You can carry on where you were:", which a
    phone with no alert never says."""
    alice, calm = await _discreet(desk, "alice"), await _discreet(desk, "calm")
    assert [r.text for r in await alice.say("/sos")] == ["OK."]
    shown, usual = await alice.say(said), await calm.say(said)
    assert [(r.text, r.choices) for r in shown] == [(r.text, r.choices) for r in usual]


@pytest.mark.parametrize(("channel", "count"), [("telegram", 1), ("signal", None)])
async def test_one_person_typed_on_telegram_is_a_count_of_one(
    desk: Desk, channel: str, count: int | None
) -> None:
    """ "How many people, roughly? Send a number." with a "Not sure" button: on Telegram
    (buttons, never numbered) a typed "1" is one person; it was read as option 1, "Not
    sure". On Signal the option is written "1. Not sure", and "1" stays that option."""
    alice = await onboard(desk, channel=channel)
    for said in ("/report", Pick("threat"), Pick("today"), Pick("skip"), Pick("police")):
        await alice.say(said)
    for said in (Pick("others"), "1", "they were followed", Pick("done"), Pick("none")):
        await alice.say(said)
    for said in (Pick("no"), Pick("record"), Pick("send")):
        await alice.say(said)
    async with desk.sessions() as s:
        filed = (await s.execute(select(Report))).scalar_one()
    body = open_sealed(
        desk.private_key, filed.sealed_body, org_id=desk.org.id, record_id=filed.id, kind="report"
    )
    assert body["count"] == count


@pytest.mark.parametrize(
    ("typed", "locale"),
    [("عربي", "ar"), ("Arabic", "ar"), ("spanish", "es"), ("castellano", "es"),
     ("francais", "fr"), ("French", "fr"), ("portugues", "pt"), ("inglés", "en")],
)  # fmt: skip
async def test_the_language_typed_as_people_name_it_is_taken(
    desk: Desk, typed: str, locale: str
) -> None:
    """Signal gives no language, so the first question is in English: someone who answers
    with their language's everyday name ("عربي", not "العربية"), or its English name, got
    "Please pick one of the options" in a language they may not read."""
    chat = desk.chat("alice", language=None)
    chat.channel = "signal"
    await chat.say(await desk.invite())
    assert "Please pick one of the options." not in await chat.text(typed)
    defender = await chat.defender()
    assert defender is not None and defender.locale == locale


async def test_the_duress_pin_at_a_question_that_takes_no_pin_survives_a_failing_flow(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R27: an error while handling the duress PIN never swallows its silent alert; typed at
    the check-in menu (no PIN question) it is the alert it is elsewhere."""
    alice = await onboard(desk)
    await alice.say("/checkin")

    async def broken(ctx: object) -> str:
        raise RuntimeError("a bug")

    spec = registry.get("checkin")
    assert spec is not None
    monkeypatch.setitem(spec.states, "menu", broken)
    assert "something went wrong" in await alice.text(DURESS_PIN)
    (alert,) = await alerts(desk)
    assert alert.kind is AlertKind.duress and alert.do_not_contact


@pytest.mark.parametrize(("language", "typed"), [("en", "No"), ("fr", "non"), ("ar", "لا")])
async def test_no_to_would_you_like_a_regular_check_in_is_no(
    desk: Desk, language: str, typed: str
) -> None:
    """ "Would you like a regular check-in? Send a time, like 20:00." answered "no" (as the
    question invites) got "Please send a time like 20:00 or 8pm" in onboarding."""
    chat = desk.chat("alice", language=language)
    await chat.say(await desk.invite())
    for said in (Pick(f"lang:{language}"), *ONBOARDING[1:8]):
        await chat.say(said)
    asked = i18n.gettext(language)("Please send a time like 20:00 or 8pm.")
    assert asked not in await chat.text(typed)
    for said in ONBOARDING[9:]:
        await chat.say(said)
    defender = await chat.defender()
    assert defender is not None and defender.status.value == "active"


@pytest.mark.parametrize(
    ("language", "typed", "then"),
    [("en", "no", "Would you like a regular check-in?"),
     ("fr", "oui", "Comment appelez-vous cette personne"),
     ("ar", "لا", None), ("es", "sí", None)],
)  # fmt: skip
async def test_yes_or_no_to_add_a_trusted_contact_now(
    desk: Desk, language: str, typed: str, then: str | None
) -> None:
    """ "Trusted contacts are people we tell when you need help. … Add one now?" answered
    with a bare yes or no got "Please pick one of the options" in onboarding."""
    chat = desk.chat("alice", language=language)
    await chat.say(await desk.invite())
    for said in (Pick(f"lang:{language}"), *ONBOARDING[1:7]):
        await chat.say(said)
    shown = await chat.text(typed)
    assert i18n.gettext(language)("Please pick one of the options.") not in shown
    if then is not None:
        assert then in shown.replace("\u202f", " ")


@pytest.mark.parametrize(("language", "typed"), [("es", "no"), ("fr", "non"), ("ar", "لا")])
async def test_no_to_share_your_location_skips_it(desk: Desk, language: str, typed: str) -> None:
    """Mid-alert, "If you can, share your location" answered "no" got "Share your location
    with your messenger's location button, or skip." and the question again."""
    alice = await onboard(desk, language=language, channel="signal")
    await alice.say("/sos")
    back = await alice.say(typed)
    assert [c.key for c in back[-1].choices] == ["yes", "no"], back  # can you talk?


@pytest.mark.parametrize(("language", "typed"), [("en", "no"), ("es", "No"), ("ar", "لا")])
async def test_no_to_do_you_have_photos_goes_on(desk: Desk, language: str, typed: str) -> None:
    """ "Do you have photos, documents or voice notes?" answered "no" got "Please pick one of
    the options" (and the long question again) instead of going on to consent."""
    alice = await onboard(desk, language=language)
    for said in ("/report", Pick("threat"), Pick("today"), Pick("skip"), Pick("police")):
        await alice.say(said)
    for said in (Pick("me"), "they followed me"):
        await alice.say(said)
    await alice.say(Pick("done"))
    back = await alice.say(typed)
    assert [c.key for c in back[-1].choices] == ["yes", "anonymous", "no"], back  # consent


@pytest.mark.parametrize(
    ("phrase", "answer"),
    [
        (f"The bakery opens at {CANCEL_PIN}", "without your PIN"),
        (f"Bus {DURESS_PIN[:2]} {DURESS_PIN[2:]} is late", "without your PIN"),
        (f"Room 1{CANCEL_PIN}5", "without your PIN"),  # inside a longer number
        ("The bakery opens at 0730", "Saved."),
        ("Call 555 0199 2277", "fewer digits"),  # more digits than are checked
    ],
)
async def test_a_phrase_that_would_show_a_pin_is_refused(
    desk: Desk, phrase: str, answer: str
) -> None:
    """Sent in the open to raise the alert, the phrase would show the PIN it holds to
    whoever reads the screen."""
    alice = await onboard(desk)
    assert answer in await _phrase(alice, "alert_phrase", phrase)


async def test_a_phrases_pin_checks_run_before_the_one_writers_turn(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Argon2id takes a fifth of a second a check on this machine: run inside the
    transaction, a phrase's checks would hold up every other defender's message, a panic
    too (on SQLite one transaction writes at a time). The engine runs them before, as it does
    for a PIN."""
    alice = await onboard(desk)
    held: list[bool] = []
    check = engine_module.pins.check

    def watched(*args: Any) -> Any:
        held.append(desk.engine._writers.locked())
        return check(*args)

    monkeypatch.setattr(engine_module.pins, "check", watched)
    monkeypatch.setattr(desk.engine, "_writers", asyncio.Semaphore(1))  # held: locked
    for said in ("/settings", Pick("phrases"), CANCEL_PIN, Pick("alert_phrase")):
        await alice.say(said)
    held.clear()
    assert "without your PIN" in await alice.text(f"Room 1{CANCEL_PIN}5 is free")
    assert held and not any(held)
