"""An alert raised before onboarding is finished: it goes out at once, and, once the PINs are
chosen, it can be called off from the phone as any other (both backends)."""

from __future__ import annotations

from sqlalchemy import select

from core.models import Alert, AlertKind, AlertState
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Pick


async def states(desk: Desk) -> list[tuple[str, str]]:
    async with desk.sessions() as s:
        found = (await s.execute(select(Alert))).scalars()
        return sorted((str(a.kind), str(a.state)) for a in found)


async def half_onboarded(desk: Desk, address: str) -> Chat:
    """Language, the warning and both PINs chosen: the city question is waiting."""
    chat = desk.chat(address)
    await chat.say(await desk.invite())
    for said in (Pick("lang:en"), Pick("continue"), CANCEL_PIN, CANCEL_PIN):
        await chat.say(said)
    await chat.say(DURESS_PIN)
    assert "Which city are you in" in await chat.text(DURESS_PIN)
    return chat


async def test_cancel_at_the_alerts_question_calls_it_off_during_onboarding(desk: Desk) -> None:
    """Review: "cancel" at the alert's "can you talk?" answered "Let's finish setting up
    first": the alert, raised by mistake, could not be called off until onboarding ended."""
    chat = await half_onboarded(desk, "new")
    assert "Alert sent." in await chat.text("/alert")
    assert "Can you talk" in await chat.text(Pick("skip"))
    asked = await chat.text("cancel")
    assert "Send your PIN to call off the alert." in asked
    assert "finish setting up" not in asked
    assert "Alert called off." in await chat.text(CANCEL_PIN)
    assert await states(desk) == [(str(AlertKind.panic), str(AlertState.resolved))]
    assert "Which city are you in" in await chat.text("hello")  # onboarding goes on


async def test_the_duress_pin_there_looks_the_same_and_keeps_the_alert_on(desk: Desk) -> None:
    calm, forced = await half_onboarded(desk, "calm"), await half_onboarded(desk, "forced")
    for chat in (calm, forced):
        await chat.say("/alert")
        await chat.say(Pick("skip"))
        await chat.say("cancel")
    real, made = await calm.say(CANCEL_PIN), await forced.say(DURESS_PIN)
    assert "Alert called off." in real[0].text
    assert [r.text for r in real] == [r.text for r in made]
    assert await states(desk) == [
        (str(AlertKind.duress), str(AlertState.triggered)),
        (str(AlertKind.panic), str(AlertState.resolved)),
        (str(AlertKind.panic), str(AlertState.triggered)),
    ]
