"""Found in a review of the defenders' conversations (both backends)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core import timers
from core.db import transaction
from core.models import AlertEvent, AlertKind, AlertState, CheckIn, CheckInState
from tests.flows.conftest import CANCEL_PIN, Chat, Desk, Pick, onboard
from tests.flows.test_panic import alerts


async def _discreet(desk: Desk, name: str, channel: str | None = None) -> Chat:
    chat = await onboard(desk, name, channel=channel)
    for said in ("/settings", Pick("discreet"), Pick("on"), Pick("10m")):
        await chat.say(said)
    return chat


@pytest.mark.parametrize("said", ["hello", "what is this?", "cancel", "/cancel"])
async def test_discreet_mode_never_says_an_alert_is_on(desk: Desk, said: str) -> None:
    """After the code phrase a discreet phone shows a plain "OK."; whatever is typed next (by
    the defender, or by whoever took the phone) is answered as with no alert on."""
    alice, calm = await _discreet(desk, "alice"), await _discreet(desk, "calm")
    assert [r.text for r in await alice.say("/sos")] == ["OK."]
    shown, usual = await alice.say(said), await calm.say(said)
    assert "alert" not in "\n".join(m.text for m in shown).lower(), shown
    assert shown == usual
    assert "Alert called off." in await alice.text(CANCEL_PIN)  # the PIN still calls it off


@pytest.mark.parametrize("typed", ["¡SOS!", "¡sos", "S.O.S.", "s.o.s", "¡¡SOS!!"])
async def test_sos_as_people_write_it_raises_the_alert(desk: Desk, typed: str) -> None:
    """Spanish opens an exclamation with "¡"; "S.O.S." is how many write it."""
    alice = await onboard(desk)
    await alice.say("/report")  # mid-dialog too
    replies = await alice.say(typed)
    assert "Alert sent." in replies[0].text, replies
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic]


async def _reminded_mid_report(desk: Desk) -> Chat:
    """A Signal defender with a 30-minute timer who began a report and left it at a question;
    the timer's reminder ("1. I'm safe") arrives while the report is still open (6 h)."""
    alice = await onboard(desk, channel="signal")
    await alice.say("/checkin")
    await alice.say(Pick("30m"))
    desk.clock.advance(minutes=5)
    await alice.say("/report")
    await alice.say(Pick("threat"))
    for minutes in (16, 10):  # the pre-reminder (10 min before), then the reminder
        desk.clock.advance(minutes=minutes)
        async with transaction(desk.sessions) as s:
            await timers.take(
                s, desk.vault, state=CheckInState.armed, now=desk.clock.now, limit=10
            )
    reminders = await alice.received()
    assert reminders and all([c.key for c in r.choices] == ["safe"] for r in reminders)
    return alice


@pytest.mark.parametrize("typed", ["1", "I'm safe", "i'm SAFE"])
async def test_signal_reminder_answered_in_the_middle_of_a_report(desk: Desk, typed: str) -> None:
    """The last thing the bot asked is the reminder: its "1" (or its words) is an "I'm safe",
    not the answer to the report's older question (a check-in lost, the desk alerted)."""
    alice = await _reminded_mid_report(desk)
    assert "Send your PIN to confirm." in await alice.text(typed)
    assert "We noted that you are safe." in await alice.text(CANCEL_PIN)
    async with desk.sessions() as s:
        states = list((await s.execute(select(CheckIn.state))).scalars())
    assert states == [CheckInState.met]


async def test_a_report_answer_given_after_the_reminder_stays_an_answer(desk: Desk) -> None:
    """Once the defender answered the report after the reminder, "1" is the report's again."""
    alice = await _reminded_mid_report(desk)
    assert "How many" not in await alice.text(Pick("today"))  # the "when" question answered
    await alice.say(Pick("skip"))
    await alice.say(Pick("police"))
    assert "How many" in await alice.text("2")  # "2. Me and others": the report's option


async def test_signal_reminder_answered_while_an_alert_waits_never_calls_it_off(
    desk: Desk,
) -> None:
    """The alert's last question offers "1. Call it off": a reminder's "1" after it must not
    call the alert off (the PIN that follows would have told everyone it was a false alarm)."""
    alice = await onboard(desk, channel="signal")
    await alice.say("/checkin")
    await alice.say(Pick("30m"))
    for said in ("/sos", Pick("skip"), Pick("no")):
        await alice.say(said)
    desk.clock.advance(minutes=31)
    async with transaction(desk.sessions) as s:
        await timers.take(s, desk.vault, state=CheckInState.armed, now=desk.clock.now, limit=10)
    assert "Send your PIN to confirm." in await alice.text("1")
    assert "We noted that you are safe." in await alice.text(CANCEL_PIN)
    assert [(a.kind, a.state) for a in await alerts(desk)] == [
        (AlertKind.panic, AlertState.triggered)
    ]


@pytest.mark.parametrize("spaced", ["{a} {b}", "{a}-{b}", "{a} - {b}", "/start {a}-{b}"])
async def test_a_code_read_out_in_two_halves_is_taken(desk: Desk, spaced: str) -> None:
    """Codes are read aloud and retyped (core.defenders.code_index ignores spaces and dashes):
    an invite typed "ABCD EFGH" was answered as no code at all."""
    code = await desk.invite()
    typed = spaced.format(a=code[:4], b=code[4:])
    assert "Which language do you prefer?" in await desk.chat("new").text(typed)
    alice = await onboard(desk, "alice")
    for said in ("/settings", Pick("contacts"), Pick("add"), CANCEL_PIN):
        await alice.say(said)
    shown = await alice.text("sister")
    invite = shown.split("in person or by phone: ")[1].split("\n")[0]
    asked = await desk.chat("sister").text(spaced.format(a=invite[:4], b=invite[4:]))
    assert "Do you accept?" in asked


@pytest.mark.parametrize("first", ["hello", None])
async def test_discreet_mode_on_signal_numbers_work_as_with_no_alert_on(
    desk: Desk, first: str | None
) -> None:
    """The menu a discreet phone gets after the alert answers its numbers as without one."""
    alice = await _discreet(desk, "alice", channel="signal")
    calm = await _discreet(desk, "calm", channel="signal")
    await alice.say("/sos")
    for said in ([first] if first else []) + ["1"]:
        seen = [[(m.text, m.choices) for m in await c.say(said)] for c in (alice, calm)]
        assert seen[0] == seen[1], said


async def test_an_option_typed_with_a_phone_s_curly_apostrophe_is_read(desk: Desk) -> None:
    """Phones type "’" for "'" (iOS by default): on Signal, where options are typed, "I’m
    safe" answered "Sorry, I didn't understand that", and "No, I can’t talk" was refused."""
    alice = await onboard(desk, channel="signal")
    assert "Send your PIN to confirm." in await alice.text("I’m safe")
    assert "noted that you are safe" in await alice.text(CANCEL_PIN)
    await alice.say("/sos")
    await alice.say("Skip")
    assert "Help is being organised." in await alice.text("No, I can’t talk")
    async with desk.sessions() as s:
        said = await s.execute(select(AlertEvent.detail).where(AlertEvent.kind == "can_talk"))
        assert [d["can_talk"] for d in said.scalars()] == [False]
