"""Settings: the discreet-mode delay and, on Signal, the disappearing-messages timer.

Durations are Babel's own words ("1 week", "1 semana"), so an answer can be the option's
number, its key or its word in the defender's language.
"""

from __future__ import annotations

from sqlalchemy import select

from core.defenders import settings
from core.discreet import discreet_delay
from core.messages import Outbound
from core.models import OutboxMessage
from core.outbox import payload
from tests.flows.conftest import CANCEL_PIN, Desk, Pick, onboard, run_dialog


def instructions(messages: list[Outbound]) -> list[int | None]:
    return [m.expiry_s for m in messages if not m.text]


async def test_a_signal_defender_picks_the_disappearing_timer(desk: Desk) -> None:
    alice = await onboard(desk, "alice", language="en", channel="signal")
    menu = await alice.say("/settings")
    assert "disappearing" in [c.key for c in menu[0].choices]
    await run_dialog(
        alice, [(Pick("disappearing"), "Messages in this chat disappear after 1 day.")]
    )
    picked = await alice.say("1 week")  # the option's word, as typed on Signal
    assert [m.text for m in picked if m.text] == [
        "Saved: messages in this chat now disappear after 1 week."
    ]
    assert instructions(picked) == [7 * 24 * 3600]  # its own row: the channel applies it
    defender = await alice.defender()
    assert defender is not None
    assert settings(desk.vault, defender)["signal_expiry_s"] == 7 * 24 * 3600
    await alice.say("/settings")
    await run_dialog(alice, [(Pick("disappearing"), "disappear after 1 week.")])
    shown = await alice.say("1")  # the first numbered option: 1 hour
    assert instructions(shown) == [3600]
    await run_dialog(alice, [("/settings", "Settings"), (Pick("disappearing"), "after 1 hour.")])
    assert "pick one of the options" in (await alice.text("off")).lower()  # no "off"
    async with desk.sessions() as s:
        rows = (await s.execute(select(OutboxMessage))).scalars().all()
        timers = [payload(desk.vault, r).expiry_s for r in rows]
    assert sorted(t for t in timers if t is not None) == [3600, 7 * 24 * 3600]


async def test_only_signal_defenders_see_the_timer(desk: Desk) -> None:
    bob = await onboard(desk, "bob")  # the console: no per-chat timer of ours
    menu = await bob.say("/settings")
    assert "disappearing" not in [c.key for c in menu[0].choices]
    assert "pick one of the options" in (await bob.text(Pick("disappearing"))).lower()
    defender = await bob.defender()
    assert defender is not None and "signal_expiry_s" not in settings(desk.vault, defender)


async def test_discreet_mode_asks_how_soon_messages_go(desk: Desk) -> None:
    alice = await onboard(desk, "alice", language="en", channel="signal")
    await run_dialog(
        alice,
        [
            ("/settings", "Settings: what would you like to change?"),
            (Pick("discreet"), "Discreet mode hides the alert button"),
            (Pick("on"), "After how long should we delete our sensitive messages?"),
            ("5", "Please pick one of the options."),
            (Pick("1h"), "Saved: our sensitive messages are deleted after 1 hour."),
        ],
    )
    defender = await alice.defender()
    assert defender is not None and defender.discreet
    assert settings(desk.vault, defender)["discreet_delay_s"] == 3600
    assert discreet_delay(desk.vault, defender) == 3600  # what the dispatcher waits
    await run_dialog(
        alice,
        [
            ("/settings", "Settings"),
            (Pick("discreet"), "Discreet mode"),
            (Pick("off"), "Send your PIN first."),
            (CANCEL_PIN, "Discreet mode is off."),
        ],
    )
    defender = await alice.defender()
    assert defender is not None and not defender.discreet


async def test_both_delays_in_spanish(desk: Desk) -> None:
    sara = await onboard(desk, "sara", language="es", channel="signal")
    await run_dialog(
        sara,
        [
            ("/settings", "Ajustes: ¿qué quieres cambiar?"),
            (Pick("discreet"), "modo"),
        ],
    )
    on = await sara.say(Pick("on"))
    assert "El modo discreto está activado." in on[0].text
    assert [c.label for c in on[0].choices] == ["1 minuto", "10 minutos", "1 hora", "12 horas"]
    await sara.say("12 horas")  # the word in her language
    await sara.say("/settings")
    asked = await sara.say(Pick("disappearing"))
    assert "1 día" in asked[0].text
    assert [c.label for c in asked[0].choices] == ["1 hora", "1 día", "1 semana"]
    picked = await sara.say("1 SEMANA")  # case-insensitive
    assert instructions(picked) == [7 * 24 * 3600]
    assert any("1 semana" in m.text for m in picked)
    assert "Elige una de las opciones" in await sara.text("/settings") + await sara.text("99")
    defender = await sara.defender()
    assert defender is not None and defender.discreet
    values = settings(desk.vault, defender)
    assert (values["discreet_delay_s"], values["signal_expiry_s"]) == (12 * 3600, 7 * 24 * 3600)
