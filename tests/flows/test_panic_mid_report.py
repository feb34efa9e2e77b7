"""An alert raised in the middle of a report drops the report being written, on purpose:
the phone may now be in other hands, and nothing may show that a report was under way
(R7: nothing a captor can read out of the chat by asking the bot). Both backends."""

from __future__ import annotations

from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Pick, onboard


async def after_alert(chat: Chat, pin: str, *, writing: bool) -> list[str]:
    if writing:
        for said in ("/report", Pick("threat"), Pick("today"), "Barrio Canary"):
            await chat.say(said)
    for said in ("/sos", Pick("skip"), Pick("no"), Pick("calloff"), pin):
        await chat.say(said)
    return [m.text for said in ("/report", "menu", "cancel") for m in await chat.say(said)]


async def test_after_the_alert_nothing_shows_a_report_was_being_written(desk: Desk) -> None:
    calm, forced = await onboard(desk, "calm"), await onboard(desk, "forced")
    never = await onboard(desk, "never")
    shown = await after_alert(calm, CANCEL_PIN, writing=True)
    assert shown == await after_alert(forced, DURESS_PIN, writing=True)
    assert shown == await after_alert(never, CANCEL_PIN, writing=False)
    assert "What happened?" in shown[0]  # /report starts afresh
