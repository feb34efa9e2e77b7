"""A trusted contact learns, when they accept, the name our alerts will give the defender:
someone who is the contact of several defenders must know whom an alert is about (both
backends)."""

from __future__ import annotations

import pytest

from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Pick, onboard


async def invited(defender: Chat) -> str:
    for said in ("/settings", Pick("contacts"), Pick("add"), CANCEL_PIN):
        await defender.say(said)
    return (await defender.text("friend")).split("by phone: ")[1].split("\n")[0]


async def handle(chat: Chat) -> str:
    defender = await chat.defender()
    assert defender is not None
    return defender.handle


async def test_the_contact_is_told_the_name_the_alerts_will_use(desk: Desk) -> None:
    """Review: "Your contact amber-hare-3138 may need help" named someone the contact had
    never been told of: a contact of two defenders could not know which one it was."""
    alice, bob = await onboard(desk, "alice"), await onboard(desk, "bob")
    friend = desk.chat("friend")
    for defender in (alice, bob):
        await friend.say(await invited(defender))
        accepted = await friend.text(Pick("accept"))
        assert f"In our messages they are called {await handle(defender)}." in accepted
    await bob.say("/sos")
    told = " ".join(m.text for m in await friend.received())
    assert await handle(bob) in told and await handle(alice) not in told


@pytest.mark.parametrize("channel", ["telegram", "signal"])
async def test_the_defender_is_shown_the_name_their_contacts_will_read(
    desk: Desk, channel: str
) -> None:
    """Review: contacts were told "In our messages they are called amber-hare-3138", but
    nothing showed the defender that name: they could not tell a contact whom alerts about
    "amber-hare-3138" would be about. It is on the contacts screen, and with each code."""
    alice = await onboard(desk, channel=channel)
    called = f"In our messages to your contacts, you are called {await handle(alice)}."
    await alice.say("/settings")
    assert called in await alice.text(Pick("contacts"))
    for said in (Pick("add"), CANCEL_PIN):
        await alice.say(said)
    (code,) = await alice.say("friend")
    assert "by phone: " in code.text and called in code.text and code.sensitive


async def test_a_contact_added_under_duress_shows_the_same(desk: Desk) -> None:
    """R8: the duress PIN's contact (never notified) gets the same words, the name too."""
    calm, forced = await onboard(desk, "calm"), await onboard(desk, "forced")
    shown = []
    for chat, pin in ((calm, CANCEL_PIN), (forced, DURESS_PIN)):
        for said in ("/settings", Pick("contacts"), Pick("add"), pin):
            await chat.say(said)
        (code,) = await chat.say("friend")
        shown.append(code.text.replace(await handle(chat), "NAME").split("\n", 1)[1])
    assert shown[0] == shown[1] and "you are called NAME." in shown[0]
