"""Found in review: an alert command with words after it, Signal's numbered options with
nothing in progress (the menu, a reminder), a PIN left on screen after a conversation
expired, a duress PIN whose handling failed, and report text that looked like coordinates."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.signal_render import parse_location
from core import timers
from core.db import transaction
from core.messages import InboundAttachment
from core.models import (
    AlertEvent,
    AlertKind,
    CheckIn,
    CheckInState,
    Evidence,
    TrustedContact,
)
from flows import store
from flows.engine import housekeeping
from tests.flows.conftest import (
    CANCEL_PIN,
    DURESS_PIN,
    Desk,
    Event,
    Pick,
    onboard,
)
from tests.flows.test_panic import alerts


async def test_signal_menu_number_raises_the_alert(desk: Desk) -> None:
    alice = await onboard(desk, channel="signal")
    menu = await alice.say("/menu")
    keys = [c.key for c in menu[-1].choices]
    number = str(keys.index("panic") + 1)  # "6. Alert my contacts now" as Signal renders it
    reply = await alice.text(number)
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic], reply


async def test_signal_menu_number_one_is_im_safe(desk: Desk) -> None:
    alice = await onboard(desk, channel="signal")
    menu = await alice.say("/menu")
    assert menu[-1].choices[0].key == "safe"
    reply = await alice.text("1")  # "1. I'm safe"
    assert "Send your PIN to confirm." in reply, reply


async def test_signal_reminder_option_one_checks_in(desk: Desk) -> None:
    alice = await onboard(desk, channel="signal")
    await alice.say("/checkin")
    await alice.say(Pick("30m"))
    desk.clock.advance(minutes=31)
    async with transaction(desk.sessions) as s:
        await timers.take(s, desk.vault, state=CheckInState.armed, now=desk.clock.now, limit=10)
    (reminder,) = await alice.received()
    assert [c.key for c in reminder.choices] == ["safe"]  # Signal shows "1. I'm safe"
    reply = await alice.text("1")
    assert "Send your PIN to confirm." in reply, reply


async def test_a_late_pin_is_still_deleted_from_the_chat(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/safe")  # "Send your PIN to confirm."
    desk.clock.advance(minutes=31)  # the check-in conversation's TTL is 30 minutes
    replies = await alice.say(CANCEL_PIN)
    assert any(r.delete_message_ids for r in replies), [r.text for r in replies]


async def test_a_failing_duress_pin_still_raises_the_duress_alert(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await onboard(desk)
    await alice.say("/safe")
    real_save, calls = store.save, []

    async def flaky(
        *args: Any, **kwargs: Any
    ) -> None:  # one transient database error, like "database is locked"
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")
        return await real_save(*args, **kwargs)

    monkeypatch.setattr(store, "save", flaky)
    await alice.say(DURESS_PIN)
    assert [a.kind for a in await alerts(desk)] == [AlertKind.duress]


async def test_signal_report_text_with_numbers_is_taken(desk: Desk) -> None:
    alice = await onboard(desk, channel="signal")
    await alice.say("/report")
    for said in (Pick("threat"), Pick("today"), Pick("skip"), Pick("police"), Pick("me")):
        await alice.say(said)
    text = "They fined me 12.50, 3.75 more and took my phone"
    reply = await alice.text(Event(text=text, location=parse_location(text)))  # as bot/signal.py
    assert "Received." in reply, reply


async def test_alert_command_with_words_raises_the_alert(desk: Desk) -> None:
    alice = await onboard(desk)
    reply = await alice.text("/sos police at the door")
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic], reply


async def test_alert_command_with_words_mid_report_raises_the_alert(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/report")
    for said in (Pick("threat"), Pick("today"), Pick("skip"), Pick("police"), Pick("me")):
        await alice.say(said)
    reply = await alice.text("/alert they are here")
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic], reply


async def test_alert_command_addressed_to_the_bot_or_shouted_raises_the_alert(desk: Desk) -> None:
    for n, said in enumerate(("/sos@AmparoBot", "/panic!")):
        chat = await onboard(desk, f"d{n}")
        await chat.text(said)
    assert [a.kind for a in await alerts(desk)] == [AlertKind.panic, AlertKind.panic]
    other = await onboard(desk, "d9")
    await other.text("/panicky")  # a look-alike word is not the command
    assert len(await alerts(desk)) == 2


async def test_a_code_phrase_is_never_a_pin_nor_taken_for_a_menu_option(desk: Desk) -> None:
    alice = await onboard(desk, channel="signal")
    await alice.say("/settings")
    await alice.say(Pick("phrases"))
    await alice.say(CANCEL_PIN)
    await alice.say(Pick("safe_phrase"))
    assert "not a command" in await alice.text("12 34")  # a PIN, not a phrase
    assert "Saved." in await alice.text("Alert my contacts now")  # odd, but theirs
    await alice.say("/menu")  # the menu's option 6 has the same words
    assert "PIN" in await alice.text("alert my contacts now")  # their "I'm safe"
    assert await alerts(desk) == []


async def live(desk: Desk) -> list[CheckIn]:
    async with desk.sessions() as s:
        rows = (await s.execute(select(CheckIn))).scalars()
        return [r for r in rows if r.state in (CheckInState.armed, CheckInState.reminded)]


async def test_moving_a_timer_later_needs_the_pin_and_sooner_does_not(desk: Desk) -> None:
    """Someone holding the unlocked phone cannot push a timer due in 5 minutes to 72 h."""
    alice = await onboard(desk)
    await alice.say("/checkin")
    await alice.say(Pick("2h"))
    await alice.say("/checkin")
    assert "Timer set" in await alice.text(Pick("30m"))  # sooner: no PIN
    desk.clock.advance(minutes=25)
    await alice.say("/checkin")
    await alice.say(Pick("custom"))
    assert "Send your PIN to confirm." in await alice.text("72h")
    (timer,) = await live(desk)
    assert timer.due_at.replace(tzinfo=None) < (desk.clock.now + timedelta(minutes=6)).replace(
        tzinfo=None
    )
    assert "Timer set" in await alice.text(CANCEL_PIN)
    (timer,) = await live(desk)
    assert timer.due_at.replace(tzinfo=None) > (desk.clock.now + timedelta(hours=71)).replace(
        tzinfo=None
    )


async def test_ending_or_moving_a_running_regular_check_in_needs_the_pin(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/settings")
    await alice.say(Pick("routine"))
    await alice.say("20:00")
    assert "Regular check-in set" in await alice.text(Pick("every_day"))  # the first: no PIN
    await alice.say("/settings")
    await alice.say(Pick("routine"))
    await alice.say("23:00")
    assert "Send your PIN to confirm." in await alice.text(Pick("every_day"))
    assert "Regular check-in set" in await alice.text(CANCEL_PIN)
    await alice.say("/settings")
    await alice.say(Pick("routine"))
    assert "Send your PIN to confirm." in await alice.text(Pick("none"))
    assert len(await live(desk)) == 1  # still running until the PIN
    assert "Saved." in await alice.text(CANCEL_PIN)
    assert await live(desk) == []


async def test_a_pin_change_under_duress_answers_as_if_that_pin_were_the_real_one(
    desk: Desk,
) -> None:
    """Whoever forced the duress PIN out takes it for the everyday PIN: keeping it, or making
    it the emergency PIN too, must get what the real PIN gets, and the real PIN is never
    confirmed or refused by the answers."""
    shown: dict[str, list[str]] = {"real": [], "forced": []}
    for name, current in (("real", CANCEL_PIN), ("forced", DURESS_PIN)):
        chat = await onboard(desk, name)
        for which in ("cancel", "duress"):
            await chat.say("/settings")
            await chat.say(Pick("pins"))
            await chat.say(current)  # "your current PIN"
            await chat.say(Pick(which))
            shown[name].append(await chat.text(current))  # the same one as the new PIN
            await chat.say("/cancel")
    assert shown["real"] == shown["forced"]
    assert "different" in shown["real"][1]  # the emergency PIN cannot be the everyday one


async def test_a_contact_removed_under_duress_looks_removed_and_is_still_alerted(
    desk: Desk,
) -> None:
    shown: dict[str, list[str]] = {"real": [], "forced": []}
    for name, pin in (("real", CANCEL_PIN), ("forced", DURESS_PIN)):
        chat = await onboard(desk, name)
        await chat.say("/settings")
        await chat.say(Pick("contacts"))
        await chat.say(Pick("add"))
        await chat.say(CANCEL_PIN)
        await chat.say("sister")
        for _ in range(2):  # the second time, the contact is gone
            await chat.say("/settings")
            await chat.say(Pick("contacts"))
            await chat.say(Pick("remove"))
            await chat.say(pin)
            shown[name].append(await chat.text("sister"))
        await chat.say("/settings")
        defender = await chat.defender()  # each defender's own handle is on the screen
        assert defender is not None
        screen = await chat.text(Pick("contacts"))
        shown[name].append(screen.replace(defender.handle, "<handle>"))
    assert shown["real"] == shown["forced"]
    assert shown["real"][:2] == ["Removed.", "No contact has that name."]
    async with desk.sessions() as s:
        states = sorted(
            str(c.consent) for c in (await s.execute(select(TrustedContact))).scalars()
        )
    assert states.count("removed") == 1  # only the real removal; the forced one still counts


async def test_a_pin_forced_out_under_duress_then_used_looks_real_and_alerts(desk: Desk) -> None:
    """Forced to change the everyday PIN (typing the duress PIN as the current one): the
    captor's new PIN later gets what a real new PIN gets, the old one is refused as after a
    real change, and using it alerts the desk again. The defender's real PIN still works."""
    shown: dict[str, list[str]] = {"real": [], "forced": []}
    for name, current in (("real", CANCEL_PIN), ("forced", DURESS_PIN)):
        chat = await onboard(desk, name)
        await chat.say("/settings")
        await chat.say(Pick("pins"))
        await chat.say(current)
        await chat.say(Pick("cancel"))
        await chat.say("5827")
        shown[name].append(await chat.text("5827"))
        for typed in ("5827", current):
            await chat.say("/safe")
            shown[name].append(await chat.text(typed))
            await chat.say("/cancel")
    assert shown["real"] == shown["forced"]
    assert "PIN changed." in shown["real"][0] and "not right" in shown["real"][2]
    async with desk.sessions() as s:
        raised = [
            e.kind
            for e in (await s.execute(select(AlertEvent))).scalars()
            if e.kind in ("triggered", "raised_again")
        ]
    assert len(raised) >= 2  # the forced change, then the forced PIN used
    forced = desk.chat("forced", language="en")
    await forced.say("/safe")
    assert "Thank you" in await forced.text(CANCEL_PIN)  # the defender's own PIN


async def test_a_report_written_over_days_keeps_all_its_files(desk: Desk) -> None:
    """Its conversation stays open (each message within 6 h of the last): housekeeping must
    not delete its first files a day later (told "6 files received", 4 were filed)."""
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    await alice.say(Pick("me"))
    await alice.say("text")
    await alice.say(Pick("done"))
    for n in range(6):  # one file every 5 h: the conversation never expires (TTL 6 h)
        data = b"OggS" + bytes([n])
        await alice.say(Event(attachments=(InboundAttachment("voice", "audio/ogg", 5, data),)))
        desk.clock.advance(hours=5)
        await housekeeping(desk.sessions, desk.clock.now)
    for said in (Pick("done"), Pick("no"), Pick("record")):
        await alice.say(said)
    assert "receipt code" in await alice.text(Pick("send"))
    async with desk.sessions() as s:
        filed = list((await s.execute(select(Evidence))).scalars())
    assert len(filed) == 6, f"told '6 files received', {len(filed)} filed"
