"""R6: once a defender's Signal safety number changed, their Signal chat takes only alerts
(and the questions after one) until the desk resolves the "safety number changed" alert: an
"I'm safe", a PIN, a setting or a deletion from a phone that may be in other hands must not
stop an escalation or erase anything (both backends)."""

from __future__ import annotations

from sqlalchemy import select

from core import alert_handling, alerts
from core.db import transaction
from core.messages import Location
from core.models import Alert, AlertKind, CheckIn, CheckInState, Defender, DefenderStatus
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Event, Pick, onboard

FROZEN = "this chat can only raise an alert"


async def _key_changed(desk: Desk, chat: Chat) -> Alert:
    """What core.delivery does when signal-cli refuses a send: untrusted identity."""
    found = await chat.defender()
    assert found is not None
    async with transaction(desk.sessions) as s:
        defender = await s.get(Defender, found.id)
        assert defender is not None
        return await alerts.raise_alert(
            s, desk.vault, defender=defender, kind=AlertKind.identity_changed, now=desk.clock.now
        )


async def _checkin(desk: Desk) -> CheckIn:
    async with desk.sessions() as s:
        return (await s.execute(select(CheckIn))).scalar_one()


async def test_a_changed_safety_number_freezes_all_but_alerts(desk: Desk) -> None:
    chat = await onboard(desk, "+15550100", channel="signal")
    await chat.say("/checkin")
    await chat.say(Pick("30m"))
    changed = await _key_changed(desk, chat)
    for said in (
        Pick("safe"),
        "/safe",
        CANCEL_PIN,
        "/settings",
        "/checkin",
        "/contacts",
        "/cancel",
        "hello",
    ):
        shown = await chat.text(said)
        assert FROZEN in shown, (said, shown)
    armed = await _checkin(desk)
    assert armed.state is CheckInState.armed  # still escalates if missed
    defender = await chat.defender()
    assert defender is not None and defender.status is DefenderStatus.active

    assert "Alert sent" in await chat.text("/sos")  # an alert always goes
    here = Event(location=Location(4.6, -74.08))
    assert "Location received" in await chat.text(here)  # so do the questions after it
    assert "Help is being organised" in await chat.text(Pick("yes"))
    assert FROZEN in await chat.text(CANCEL_PIN)  # but not calling it off
    async with desk.sessions() as s:
        panic = (await s.execute(select(Alert).where(Alert.kind == AlertKind.panic))).scalar_one()
        assert panic.open_key is not None and panic.location_sealed is not None

    async with transaction(desk.sessions) as s:  # the desk verified them another way
        alert = await s.get(Alert, changed.id)
        assert alert is not None
        await alert_handling.resolve(
            s, desk.vault, alert=alert, outcome="verified", actor="r", now=desk.clock.now
        )
    assert FROZEN not in await chat.text("/safe")
    assert "safe" in await chat.text(CANCEL_PIN)
    assert (await _checkin(desk)).state is CheckInState.met


async def test_only_the_signal_chat_is_frozen(desk: Desk) -> None:
    chat = await onboard(desk, "bob")  # the console: no safety numbers
    await chat.say("/checkin")
    await chat.say(Pick("30m"))
    await _key_changed(desk, chat)
    assert FROZEN not in await chat.text("/safe")
    assert "safe" in await chat.text(CANCEL_PIN)
    assert (await _checkin(desk)).state is CheckInState.met


async def test_the_duress_pin_still_raises_its_silent_alert_from_a_frozen_chat(
    desk: Desk,
) -> None:
    chat = await onboard(desk, "+15550101", channel="signal")
    await chat.say("/checkin")
    await chat.say(Pick("30m"))
    assert "PIN" in await chat.text("/safe")  # asked for the PIN before the key changed
    await _key_changed(desk, chat)
    answers = [await chat.text(DURESS_PIN), await chat.text(CANCEL_PIN)]
    assert answers[0] == answers[1] and FROZEN in answers[0]  # the same, whichever PIN
    async with desk.sessions() as s:
        kinds = set((await s.execute(select(Alert.kind))).scalars())
    assert kinds == {AlertKind.identity_changed, AlertKind.duress}
    assert (await _checkin(desk)).state is CheckInState.armed
