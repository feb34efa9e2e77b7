"""Onboarding: from a desk's invite code to an active defender; trusted contacts confirming."""

from __future__ import annotations

from sqlalchemy import select

from core.models import Consent, DefenderStatus, TrustedContact
from core.security import verify_pin
from tests.flows.conftest import CANCEL_PIN, Desk, Pick, onboard, run_dialog


async def test_it_onboards_in_english(desk: Desk) -> None:
    chat = desk.chat()
    await run_dialog(
        chat,
        [
            ("hello", "If you were given a code, send it here."),
            (await desk.invite(), "Which language do you prefer?"),
            (Pick("lang:en"), "Signal does"),
            (Pick("continue"), "Choose a PIN of 4 to 8 digits."),
            ("4826", "Send the same PIN again to confirm."),
            ("4826", "Now choose a second, different PIN for emergencies."),
            ("4826", "This PIN must be different from the first one."),
            ("9713", "Send the emergency PIN again to confirm."),
            ("9713", "Which city are you in"),
            ("Atlantis", "I don't know that place."),
            ("Bogota", "Time zone set: it is 10:00 AM there now."),
            (Pick("later"), "Would you like a regular check-in?"),
            ("20:00", "On which days?"),
            (Pick("weekdays"), "Regular check-in set. The next one is due 8:00 PM."),
            ("is the bakery open?", "a second phrase that means 'I'm safe'"),
            (Pick("skip"), "You're all set."),
        ],
    )
    defender = await chat.defender()
    assert defender is not None and defender.status is DefenderStatus.active
    assert defender.timezone == "America/Bogota" and defender.locale == "en"
    pepper = desk.vault.keyring.pepper
    assert defender.cancel_pin_hash and verify_pin(defender.cancel_pin_hash, "4826", pepper)
    assert defender.duress_pin_hash and verify_pin(defender.duress_pin_hash, "9713", pepper)


async def test_it_onboards_in_spanish_with_arabic_indic_digits(desk: Desk) -> None:
    chat = desk.chat("beatriz", language="es-CO")
    await run_dialog(
        chat,
        [
            (await desk.invite(), "¿En qué idioma"),
            ("2", "Telegram no"),  # the second option, as Signal users answer
            (Pick("continue"), "PIN de 4 a 8 cifras"),
            ("٤٨٢٦", "Vuelve a enviar el mismo PIN"),
            ("4826", "un segundo PIN"),
            ("۹۷۱۳", "Vuelve a enviar el PIN de emergencia"),
            ("9713", "ciudad"),
            ("Ciudad de México", "Zona horaria guardada"),
        ],
    )
    defender = await chat.defender()
    assert defender is not None and defender.locale == "es"
    assert defender.timezone == "America/Mexico_City"
    assert defender.cancel_pin_hash is not None
    assert verify_pin(defender.cancel_pin_hash, "4826", desk.vault.keyring.pepper)


async def test_it_starts_over_when_the_two_pins_differ(desk: Desk) -> None:
    chat = desk.chat()
    await chat.say(await desk.invite())
    await chat.say(Pick("lang:en"))
    await chat.say(Pick("continue"))
    await run_dialog(
        chat,
        [
            ("4826", "again"),
            ("4321", "The two PINs were different."),
            ("12", "A PIN has 4 to 8 digits."),
            ("5827", "again"),
            ("5827", "second, different PIN"),
        ],
    )


async def test_it_takes_an_invite_code_once_and_not_after_it_expires(desk: Desk) -> None:
    code = await desk.invite()
    first, second = desk.chat("a"), desk.chat("b")
    assert "language" in await first.text(f"/start {code.lower()}")
    assert "send it here" in await second.text(code)
    late = desk.chat("c")
    expired = await desk.invite()
    desk.clock.advance(days=8)
    assert "send it here" in await late.text(expired)
    assert await late.defender() is None


async def test_it_counts_a_contact_only_after_they_confirm(desk: Desk) -> None:
    alice = await onboard(desk)
    replies = await alice.say("/settings")
    assert "Settings" in replies[0].text
    await alice.say(Pick("contacts"))
    await alice.say(Pick("add"))
    await alice.say(CANCEL_PIN)
    shown = await alice.say("my sister")
    assert shown[0].sensitive
    # where the contact sends it: to the bot from their own phone, not into the defender's chat
    assert "They send it to this bot from their own phone within 7 days" in shown[0].text
    code = shown[0].text.split("in person or by phone: ")[1].split("\n")[0]
    async with desk.sessions() as s:
        contact = (await s.execute(select(TrustedContact))).scalar_one()
    assert contact.consent is Consent.invited

    sister = desk.chat("sister", language="fr")
    assert "Acceptez-vous" in await sister.text(code)
    assert "Merci" in await sister.text(Pick("accept"))
    assert "You now have 1 confirmed contact." in "".join(m.text for m in await alice.received())
    async with desk.sessions() as s:
        contact = (await s.execute(select(TrustedContact))).scalar_one()
    assert contact.consent is Consent.confirmed and contact.address_id is not None
    assert contact.locale == "fr"
    assert "send it here" in await desk.chat("other").text(code)  # used once


async def test_it_lets_a_contact_decline_and_stop(desk: Desk) -> None:
    alice = await onboard(desk)
    await alice.say("/settings")
    await alice.say(Pick("contacts"))
    await alice.say(Pick("add"))
    await alice.say(CANCEL_PIN)
    code = (await alice.text("Tom")).split("by phone: ")[1].split("\n")[0]
    tom = desk.chat("tom")
    await tom.say(code)
    assert "You will not get any messages" in await tom.text(Pick("decline"))
    assert "declined" in "".join(m.text for m in await alice.received())
    async with desk.sessions() as s:
        contact = (await s.execute(select(TrustedContact))).scalar_one()
    assert contact.consent is Consent.declined and contact.address_id is None


async def test_it_resumes_an_abandoned_onboarding_where_it_stopped(desk: Desk) -> None:
    chat = desk.chat()
    await chat.say(await desk.invite())
    for said in (Pick("lang:en"), Pick("continue"), "4826", "4826", "9713", "9713"):
        await chat.say(said)
    desk.clock.advance(days=3)
    text = await chat.text("hi")
    assert "closed after a long silence" in text and "Which city are you in" in text
    desk.clock.advance(minutes=1)
    assert "Time zone set" in await chat.text("Lisbon")
