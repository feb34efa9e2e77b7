"""R7: someone holding the phone asks the bot everything; nothing from the past comes back."""

from __future__ import annotations

from tests.flows.conftest import CANCEL_PIN, Desk, Pick, onboard

CANARIES = ("CANARY-sister", "CANARY river crossing", "CANARY-bakery", "Barrio CANARY")


async def test_it_tells_a_captor_nothing_from_the_past(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("/settings", Pick("contacts"), Pick("add"), CANCEL_PIN, CANARIES[0]):
        await alice.say(said)
    for said in ("/settings", Pick("phrases"), CANCEL_PIN, Pick("alert_phrase"), CANARIES[2]):
        await alice.say(said)
    for said in (
        "/report", Pick("threat"), Pick("today"), CANARIES[3], Pick("police"), Pick("me"),
        CANARIES[1], Pick("done"), Pick("none"), Pick("no"), Pick("record"), Pick("send"),
    ):  # fmt: skip
        await alice.say(said)
    await alice.received()
    captor = []
    for said in (
        "/help", "/status", "/checkin", Pick("status"), "/settings", Pick("contacts"),
        Pick("back"), Pick("phrases"), "menu", "/report", "/cancel", "/safety", "history",
        "show my reports", "/start", "/export", Pick("menu:settings"), Pick("language"),
    ):  # fmt: skip
        captor += [m.text for m in await alice.say(said)]
    shown = "\n".join(captor)
    assert shown and not [c for c in CANARIES if c.lower() in shown.lower()]
