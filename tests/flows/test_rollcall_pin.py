"""A roll-call's "I'm safe" takes the PIN, as a check-in's does (R11): from a phone in other
hands it would tell the desk that the defender is safe. The duress PIN looks the same on the
phone and raises the silent duress alert (R8); wrong PINs never lock out, and repeated ones
escalate silently (R10). "I need help" takes no PIN."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, update

from core import alert_handling
from core.db import transaction
from core.messages import InboundAttachment, Outbound
from core.models import Alert, AlertEvent, AlertKind, Defender, Evidence
from flows.engine import housekeeping
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Event, Pick, onboard
from tests.flows.test_rollcall import answer_of, start

ASK_PIN = "Send your PIN to confirm."
WRONG = "That PIN is not right. Please try again."
THANKS = "Thank you: your answer “I'm safe” was recorded."
LOCKOUT_WORDS = ("lock", "too many", "blocked", "attempts", "later")


async def alerts_of(desk: Desk) -> list[tuple[AlertKind, str, list[str]]]:
    """Each alert: its kind, whose (handle), and its timeline's events."""
    async with desk.sessions() as s:
        found = []
        for alert in (await s.scalars(select(Alert).order_by(Alert.triggered_at))).all():
            handle = await s.scalar(
                select(Defender.handle).where(Defender.id == alert.defender_id)
            )
            events = await s.scalars(
                select(AlertEvent.kind).where(AlertEvent.alert_id == alert.id)
            )
            found.append((alert.kind, str(handle), list(events)))
        return found


async def handle_of(chat: Chat) -> str:
    defender = await chat.defender()
    assert defender is not None
    return defender.handle


async def make_discreet(chat: Chat) -> None:
    for said in ("/settings", Pick("discreet"), Pick("on"), Pick("10m")):
        await chat.say(said)
    defender = await chat.defender()
    assert defender is not None and defender.discreet


@pytest.mark.parametrize("channel", ["telegram", "signal"])
async def test_its_safe_button_counts_only_once_the_pin_confirms_it(
    desk: Desk, channel: str
) -> None:
    alice = await onboard(desk, channel=channel)
    rollcall_id = await start(desk)
    await alice.received()
    (asked,) = await alice.say(Pick(f"rollcall:safe:{rollcall_id.hex}"))
    assert asked.text == ASK_PIN and asked.sensitive
    assert await answer_of(desk, alice, rollcall_id) is None  # not counted without the PIN
    await alice.say("/menu")  # the question left unanswered: still not counted
    assert await answer_of(desk, alice, rollcall_id) is None
    await alice.say(Pick(f"rollcall:safe:{rollcall_id.hex}"))
    (ack,) = await alice.say(CANCEL_PIN)
    assert ack.text == THANKS
    assert str(alice.sent) in ack.delete_message_ids  # the PIN does not stay on the phone
    # Answered: the question is over (test_once_answered_…); Telegram keeps "I need help".
    assert [c.label for c in ack.choices] == (["I need help"] if channel == "telegram" else [])
    assert await answer_of(desk, alice, rollcall_id) == "safe"
    assert await alerts_of(desk) == []


@pytest.mark.parametrize("typed", ["I'm safe", "safe", "1"])
async def test_a_typed_safe_takes_the_pin_too(desk: Desk, typed: str) -> None:
    """Signal numbers the options ("1. I'm safe") and takes typed words: the same PIN."""
    alice = await onboard(desk, channel="signal")
    rollcall_id = await start(desk)
    await alice.received()
    assert await alice.text(typed) == ASK_PIN
    assert await answer_of(desk, alice, rollcall_id) is None
    assert await alice.text(CANCEL_PIN) == THANKS
    assert await answer_of(desk, alice, rollcall_id) == "safe"
    await alice.say("I need help")  # words still change the answer while it is open
    assert await answer_of(desk, alice, rollcall_id) == "help"


@pytest.mark.parametrize("channel", ["telegram", "signal"])
@pytest.mark.parametrize("via", ["rollcall", "checkin"])
async def test_once_answered_with_the_pin_the_rollcall_question_is_over(
    desk: Desk, channel: str, via: str
) -> None:
    """Review: after "I'm safe" and the PIN, the roll-call's options stayed the question
    asked: a "2" typed later still answered it ("I need help": an alert to the desk and the
    contacts), and "help" showed the thank-you again instead of what follows the help. Also
    when the check-in's "I'm safe" (the menu's) answered the roll-call."""
    alice = await onboard(desk, channel=channel)
    rollcall_id = await start(desk)
    await alice.received()
    if via == "rollcall":
        assert await alice.text(Pick(f"rollcall:safe:{rollcall_id.hex}")) == ASK_PIN
    else:
        await alice.say("/menu")
        assert await alice.text(Pick("safe")) == ASK_PIN
    (thanks, *_rest) = await alice.say(CANCEL_PIN)
    # No options left on screen to answer by number; on Telegram, the roll-call's own thanks
    # keeps its "I need help" button (the check-in's thanks has none).
    button = channel == "telegram" and via == "rollcall"
    assert [c.label for c in thanks.choices] == (["I need help"] if button else [])
    assert await answer_of(desk, alice, rollcall_id) == "safe"
    shown = await alice.text("help")
    assert shown.startswith("Here is what you can send:")
    assert THANKS not in shown and "We noted that you are safe" not in shown
    shown = await alice.text("2")
    assert "What would you like to do?" in shown  # the menu's, as with no roll-call
    assert "told that you need help" not in shown
    assert await answer_of(desk, alice, rollcall_id) == "safe"
    assert await alerts_of(desk) == []


@pytest.mark.parametrize("discreet", [False, True])
async def test_the_duress_pin_looks_the_same_and_raises_the_silent_alert(
    desk: Desk, discreet: bool
) -> None:
    calm, forced = await onboard(desk, "calm"), await onboard(desk, "forced")
    for chat in (calm, forced):
        if discreet:
            await make_discreet(chat)
    rollcall_id = await start(desk)
    shown: list[list[Outbound]] = []
    for chat, pin in ((calm, CANCEL_PIN), (forced, DURESS_PIN)):
        (asked,) = await chat.received()
        # Discreet mode: the roll-call does not name what stands behind the bot (R9).
        framing = "Message from your group:" if discreet else "Message from your protection desk:"
        assert asked.text.startswith(framing) and asked.sensitive is discreet
        asked = await chat.say(Pick(f"rollcall:safe:{rollcall_id.hex}"))
        shown.append(asked + await chat.say(pin))
    assert shown[0] == shown[1]  # text, buttons, deletions, sensitivity: byte for byte
    assert shown[0][-1].text == THANKS
    assert str(calm.sent) in shown[0][-1].delete_message_ids
    assert all(m.sensitive for m in shown[0]) if discreet else True
    assert await answer_of(desk, calm, rollcall_id) == "safe"
    assert await answer_of(desk, forced, rollcall_id) == "help"  # never counted safe
    ((kind, whose, events),) = await alerts_of(desk)  # no panic: the duress alert says it
    assert (kind, whose) == (AlertKind.duress, await handle_of(forced))
    assert "rollcall_help" in events  # the roll-call on its timeline


async def test_wrong_pins_never_lock_out_and_escalate_silently(desk: Desk) -> None:
    """R10: two wrong PINs are asked again, the third in a row "works" as the PIN would and
    raises the duress alert; ten of them never show a lockout."""
    calm, guessing = await onboard(desk, "calm"), await onboard(desk, "guessing")
    rollcall_id = await start(desk)
    outputs: list[list[Outbound]] = []
    for chat, last in ((calm, CANCEL_PIN), (guessing, "0000")):
        await chat.received()
        assert await chat.text(Pick(f"rollcall:safe:{rollcall_id.hex}")) == ASK_PIN
        for _try in range(2):
            assert await chat.text("0000") == f"{WRONG}\n\n{ASK_PIN}"
        outputs.append(await chat.say(last))
    assert outputs[0] == outputs[1]
    assert await answer_of(desk, calm, rollcall_id) == "safe"
    assert await answer_of(desk, guessing, rollcall_id) == "help"
    ((kind, whose, _events),) = await alerts_of(desk)
    assert (kind, whose) == (AlertKind.duress, await handle_of(guessing))
    said = []
    for _try in range(7):  # ten wrong PINs in all
        said.append(await guessing.text(Pick(f"rollcall:safe:{rollcall_id.hex}")))
        said.append(await guessing.text("0000"))
    assert said[-1] == THANKS
    assert not any(word in text.lower() for text in said for word in LOCKOUT_WORDS)
    assert [a[0] for a in await alerts_of(desk)] == [AlertKind.duress]
    assert await answer_of(desk, guessing, rollcall_id) == "help"


async def test_help_after_the_duress_pin_still_raises_an_alert_once_that_one_is_resolved(
    desk: Desk,
) -> None:
    alice = await onboard(desk)
    rollcall_id = await start(desk)
    await alice.say(Pick(f"rollcall:safe:{rollcall_id.hex}"))
    await alice.say(DURESS_PIN)
    async with transaction(desk.sessions) as s:
        duress = await s.scalar(select(Alert))
        assert duress is not None
        await alert_handling.resolve(
            s, desk.vault, alert=duress, outcome="safe", actor="responder:test", now=desk.clock.now
        )
    desk.clock.advance(minutes=5)
    assert "told that you need help" in await alice.text(Pick(f"rollcall:help:{rollcall_id.hex}"))
    assert AlertKind.panic in [a[0] for a in await alerts_of(desk)]


async def safe_mid_report(desk: Desk) -> tuple[Chat, uuid.UUID]:
    """A defender writing a report (at "Who was affected?") presses a roll-call's "I'm safe":
    the report is set aside and the PIN asked."""
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    rollcall_id = await start(desk)
    await alice.received()
    assert await alice.text(Pick(f"rollcall:safe:{rollcall_id.hex}")) == ASK_PIN
    return alice, rollcall_id


async def test_a_report_is_set_aside_for_the_pin_and_taken_up_again(desk: Desk) -> None:
    alice, rollcall_id = await safe_mid_report(desk)
    shown = await alice.text(CANCEL_PIN)
    assert shown.startswith(THANKS) and shown.endswith("Who was affected?")
    assert await answer_of(desk, alice, rollcall_id) == "safe"


async def test_a_pin_question_left_unanswered_says_the_answer_was_not_recorded(
    desk: Desk,
) -> None:
    """Review: the report set aside came back after a long silence with "The check-in was
    closed… you are not checked in": there was no check-in, only the roll-call's answer."""
    alice, rollcall_id = await safe_mid_report(desk)
    desk.clock.advance(minutes=31)
    shown = await alice.text("hello")
    assert "roll-call's question was closed" in shown and "check-in" not in shown
    assert shown.endswith("Who was affected?")
    assert await answer_of(desk, alice, rollcall_id) is None


async def test_help_while_the_pin_is_asked_closes_the_pin_question(desk: Desk) -> None:
    """Review: "I need help" pressed while the PIN for "I'm safe" was asked raised the alert,
    then asked again for the PIN of the "I'm safe" the defender had just taken back."""
    alice, rollcall_id = await safe_mid_report(desk)
    shown = await alice.text(Pick(f"rollcall:help:{rollcall_id.hex}"))
    assert "told that you need help" in shown and ASK_PIN not in shown
    assert shown.endswith("Who was affected?")  # the report set aside, taken up again
    assert await answer_of(desk, alice, rollcall_id) == "help"
    bob = await onboard(desk, "bob")
    other = await start(desk)
    await bob.received()
    await bob.say(Pick(f"rollcall:safe:{other.hex}"))
    assert ASK_PIN not in await bob.text(Pick(f"rollcall:help:{other.hex}"))
    await bob.say(CANCEL_PIN)  # the PIN now answers no question: "help" stands
    assert await answer_of(desk, bob, other) == "help"


async def test_without_a_pin_it_is_not_counted(desk: Desk) -> None:
    """As a check-in's "I'm safe" (flows.checkin): nothing can confirm it."""
    alice = await onboard(desk)
    defender = await alice.defender()
    assert defender is not None
    async with transaction(desk.sessions) as s:
        await s.execute(
            update(Defender).where(Defender.id == defender.id).values(cancel_pin_hash=None)
        )
    rollcall_id = await start(desk)
    await alice.received()
    shown = await alice.text(Pick(f"rollcall:safe:{rollcall_id.hex}"))
    assert shown == "You have not chosen a PIN yet, so we cannot take a check-in."
    assert await answer_of(desk, alice, rollcall_id) is None


async def test_a_report_set_aside_for_the_pin_keeps_its_old_files(desk: Desk) -> None:
    """Housekeeping keeps the files of a report being written, also while it is set aside
    for a roll-call's PIN (as for a check-in's)."""
    alice = await onboard(desk)
    for said in ("/report", Pick("other"), Pick("unknown"), Pick("skip"), Pick("unknown")):
        await alice.say(said)
    for said in (Pick("me"), "text", Pick("done")):
        await alice.say(said)
    for n in range(6):  # a file every 5 h: the report's conversation never expires (6 h)
        data = b"OggS" + bytes([n])
        await alice.say(Event(attachments=(InboundAttachment("voice", "audio/ogg", 5, data),)))
        desk.clock.advance(hours=5)
    rollcall_id = await start(desk)
    await alice.received()
    assert await alice.text(Pick(f"rollcall:safe:{rollcall_id.hex}")) == ASK_PIN
    desk.clock.advance(minutes=10)
    await housekeeping(desk.sessions, desk.clock.now)  # the first files are a day old
    await alice.say(CANCEL_PIN)
    for said in (Pick("done"), Pick("no"), Pick("record")):
        await alice.say(said)
    assert "receipt code" in await alice.text(Pick("send"))
    async with desk.sessions() as s:
        filed = list((await s.execute(select(Evidence))).scalars())
    assert len(filed) == 6, f"told '6 files received', {len(filed)} filed"


async def test_a_check_in_with_the_pin_answers_an_open_rollcall(desk: Desk) -> None:
    """Review: during a roll-call ("everyone check in now") a defender checked in with the
    menu's or a reminder's "I'm safe" and their PIN, and the roll-call still counted them as
    not answered."""
    calm, forced, helped = [await onboard(desk, n) for n in ("calm", "forced", "helped")]
    rollcall_id = await start(desk)
    await helped.say(Pick(f"rollcall:help:{rollcall_id.hex}"))
    for chat in (calm, forced, helped):
        await chat.received()
        await chat.say("hello")  # the menu: its "I'm safe" is the check-in's
        assert await chat.text(Pick("safe")) == ASK_PIN
    real, made = await calm.say(CANCEL_PIN), await forced.say(DURESS_PIN)
    assert "Thank you. We noted that you are safe." in real[0].text
    assert [m.to_json() for m in real] == [m.to_json() for m in made]  # R8
    await helped.say(CANCEL_PIN)
    assert await answer_of(desk, calm, rollcall_id) == "safe"
    assert await answer_of(desk, forced, rollcall_id) == "help"  # the duress PIN
    assert await answer_of(desk, helped, rollcall_id) == "help"  # an answer given stands
    closed = await start(desk, minutes=1)
    desk.clock.advance(minutes=2)
    await calm.say("hello")
    await calm.say(Pick("safe"))
    await calm.say(CANCEL_PIN)
    assert await answer_of(desk, calm, closed) is None  # closed: not answered by it


async def test_after_the_pin_telegram_keeps_i_need_help_one_tap_away(desk: Desk) -> None:
    """Answered "I'm safe" with the PIN, a defender whose situation changes taps the button
    left under the thanks: the answer becomes "I need help" and the alert is raised."""
    alice = await onboard(desk, channel="telegram")
    rollcall_id = await start(desk)
    await alice.received()
    await alice.say(Pick(f"rollcall:safe:{rollcall_id.hex}"))
    (ack,) = await alice.say(CANCEL_PIN)
    (button,) = ack.choices
    assert button.key == f"rollcall:help:{rollcall_id.hex}"
    (told, *_rest) = await alice.say(Pick(button.key))
    assert told.text == "Your protection desk has been told that you need help."
    assert await answer_of(desk, alice, rollcall_id) == "help"
    assert [(kind, events[-1]) for kind, _h, events in await alerts_of(desk)] == [
        (AlertKind.panic, "rollcall_help")
    ]
