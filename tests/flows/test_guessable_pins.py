"""A new PIN a captor would try first (1234, 0000, 2580…) is refused, at onboarding and in
settings, the duress PIN's too: a guessable PIN must not give itself away as the duress one."""

from __future__ import annotations

import pytest

from core.pins import guessable
from core.security import verify_pin
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Desk, Pick, onboard, run_dialog

TOO_EASY = "That PIN is too easy to guess (like 1234 or 1111). Choose another."


@pytest.mark.parametrize(
    "pin",
    ["0000", "1111", "1234", "4321", "0123", "7890", "9876", "123456", "1212", "696969", "2580"],
)
def test_the_first_pins_a_captor_tries_are_guessable(pin: str) -> None:
    assert guessable(pin)


@pytest.mark.parametrize("pin", ["4826", "9713", "2468", "1357", "12121", "24680", "10293847"])
def test_other_pins_are_not(pin: str) -> None:
    assert not guessable(pin)


async def test_onboarding_refuses_guessable_pins(desk: Desk) -> None:
    chat = desk.chat()
    await chat.say(await desk.invite())
    await chat.say(Pick("lang:en"))
    ask = "Choose a PIN of 4 to 8 digits."
    await run_dialog(
        chat,
        [
            (Pick("continue"), ask),
            ("1234", f"{TOO_EASY}\n\n{ask}"),
            ("٠٠٠٠", TOO_EASY),  # Arabic-Indic digits are the same PIN
            ("4826", "Send the same PIN again to confirm."),
            ("4826", "Now choose a second, different PIN for emergencies."),
            ("0000", TOO_EASY),
            ("9713", "Send the emergency PIN again to confirm."),
            ("9713", "Your PINs are set."),
        ],
    )
    defender = await chat.defender()
    assert defender is not None and defender.cancel_pin_hash and defender.duress_pin_hash
    pepper = desk.vault.keyring.pepper
    assert verify_pin(defender.cancel_pin_hash, "4826", pepper)
    assert verify_pin(defender.duress_pin_hash, "9713", pepper)


@pytest.mark.parametrize("which", ["cancel", "duress"])
@pytest.mark.parametrize("current", [CANCEL_PIN, DURESS_PIN])
async def test_settings_refuses_a_guessable_new_pin(desk: Desk, current: str, which: str) -> None:
    """Also for whoever typed the duress PIN as the current one: what they see is the same."""
    alice = await onboard(desk)
    for said in ("/settings", Pick("pins"), current, Pick(which)):
        await alice.say(said)
    assert await alice.text("2222") == f"{TOO_EASY}\n\nSend the new PIN (4 to 8 digits)."
    assert "again to confirm" in await alice.text("5827")
    assert await alice.text("5827") == "PIN changed."
