"""Check-ins: timers in the defender's zone, "I'm safe" with a PIN, nothing from the past."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from core.models import Alert, AlertKind, CheckIn, CheckInState
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Desk, Event, Pick, onboard, run_dialog


async def timers(desk: Desk) -> list[CheckIn]:
    async with desk.sessions() as s:
        return list((await s.execute(select(CheckIn).order_by(CheckIn.created_at))).scalars())


async def test_it_runs_a_check_in_dialog_in_english(desk: Desk) -> None:
    alice = await onboard(desk)  # Bogotá: UTC-5, so 15:00 UTC is 10:00 AM there
    await run_dialog(
        alice,
        [
            ("/checkin", "Check-ins: what would you like to do?"),
            (Pick("custom"), "For example: 45m, 2h30, or at 18:30."),
            ("soon-ish", "I couldn't read that time."),
            ("2m", "the shortest timer is 5 minutes"),
            ("2h30", "Timer set: check in by 12:30 PM (in 3 hours)."),
            ("/status", "Your next check-in is due 12:30 PM"),
            ("/safe", "Send your PIN to confirm."),
            ("0000", "That PIN is not right."),
            (CANCEL_PIN, "Thank you. We noted that you are safe."),
            ("/status", "No check-in is scheduled."),
        ],
    )
    (timer,) = await timers(desk)
    assert timer.state is CheckInState.met
    assert timer.due_at == datetime(2026, 5, 4, 17, 30, tzinfo=UTC)


async def test_it_reads_a_clock_time_in_the_defenders_zone(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/checkin")
    await alice.say(Pick("custom"))
    assert "6:30 PM" in (await alice.text("at 18:30")).replace("\u202f", " ")
    (timer,) = await timers(desk)
    assert timer.due_at == datetime(2026, 5, 4, 23, 30, tzinfo=UTC)


async def test_it_never_takes_a_forwarded_or_edited_pin_as_a_check_in(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/checkin")
    await alice.say(Pick("30m"))
    await alice.say("/safe")
    assert "forwarded" in await alice.text(Event(text=CANCEL_PIN, forwarded=True))
    assert "edited" in await alice.text(Event(text=CANCEL_PIN, edited=True))
    (timer,) = await timers(desk)
    assert timer.state is CheckInState.armed
    assert "safe" in await alice.text(CANCEL_PIN)  # the conversation still waited for the PIN
    (timer,) = await timers(desk)
    assert timer.state is CheckInState.met


async def test_it_needs_the_pin_to_extend_or_pause(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/checkin")
    await alice.say(Pick("1h"))
    await run_dialog(
        alice,
        [
            ("/checkin", "what would you like"),
            (Pick("extend"), "How much more time?"),
            (Pick("30m"), "Send your PIN to confirm."),
            (CANCEL_PIN, "Done. Check in by 11:30 AM."),
            ("/checkin", "what would you like"),
            (Pick("pause"), "Why do you want to pause?"),
            (Pick("travelling"), "Send your PIN"),
            (CANCEL_PIN, "Check-ins paused."),
        ],
    )
    (timer,) = await timers(desk)
    assert timer.state is CheckInState.paused and timer.paused_reason == "travelling"
    menu = await alice.say("/checkin")
    assert "resume" in [c.key for c in menu[0].choices]
    assert "Check-ins resumed." in await alice.text(Pick("resume"))


async def test_it_checks_in_under_duress_but_raises_a_silent_alert(desk: Desk) -> None:
    calm, forced = await onboard(desk, "calm"), await onboard(desk, "forced")
    shown = []
    for chat, pin in ((calm, CANCEL_PIN), (forced, DURESS_PIN)):
        await chat.say("/checkin")
        await chat.say(Pick("1h"))
        await chat.say(Pick("safe"))  # the reminders' "I'm safe" button works from anywhere
        shown.append(await chat.say(pin))
    assert shown[0] == shown[1]
    assert all(t.state is CheckInState.met for t in await timers(desk))
    async with desk.sessions() as s:
        kinds = [a.kind for a in (await s.execute(select(Alert))).scalars()]
    assert kinds == [AlertKind.duress]


async def test_it_shows_no_history_only_the_next_due_time(desk: Desk) -> None:
    alice = await onboard(desk)
    for _ in range(3):
        await alice.say("/checkin")
        await alice.say(Pick("30m"))
        await alice.say("/safe")
        await alice.say(CANCEL_PIN)
        desk.clock.advance(minutes=10)
    status = await alice.text("/status")
    assert status == "No check-in is scheduled."
    defender = await alice.defender()
    assert defender is not None and defender.last_checkin_at == desk.clock.now.replace(minute=20)


async def test_it_runs_a_check_in_dialog_in_french(desk: Desk) -> None:
    marie = await onboard(desk, "marie", language="fr")
    await run_dialog(
        marie,
        [
            ("/checkin", "Confirmations : que voulez-vous faire ?"),
            (Pick("custom"), "Combien de temps, ou jusqu'à quand ?"),
            ("à 18h30", "Minuteur lancé : confirmez avant 18:30 (dans 9 heures)."),
            ("/status", "Votre prochaine confirmation : 18:30"),
            ("/safe", "Envoyez votre code PIN pour confirmer."),
            (CANCEL_PIN, "Merci. Nous avons noté que tout va bien."),
        ],
    )


async def test_it_takes_a_timer_given_in_words(desk: Desk) -> None:
    """ "dos horas" at "How long, or until when?" got "I couldn't read that time"."""
    ana = await onboard(desk, "ana", language="es")
    await ana.say("/checkin")
    await ana.say(Pick("custom"))
    await ana.say("dos horas")
    (timer,) = await timers(desk)
    assert timer.due_at.replace(tzinfo=UTC) == datetime(2026, 5, 4, 17, 0, tzinfo=UTC)


async def test_a_deadline_on_another_day_reads_well_in_every_language(desk: Desk) -> None:
    """The time is "22:00" today but "lun 22:00" on another day: "antes de las {when}" and
    "est prévue {when}" read wrongly with a day; the sentences put the time after a colon."""
    for language, set_, status in (
        ("es", "Temporizador en marcha. Plazo para confirmar: ", "Tu próxima confirmación: "),
        ("fr", "Minuteur lancé : confirmez avant ", "Votre prochaine confirmation : "),
        ("pt", "Temporizador definido: confirme até ", "A sua próxima confirmação: "),
    ):
        chat = await onboard(desk, f"defender-{language}", language=language)
        await chat.say("/checkin")
        await chat.say(Pick("custom"))
        assert (await chat.text("48h")).startswith(set_), language
        assert (await chat.text("/status")).startswith(status), language
