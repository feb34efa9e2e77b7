"""A trusted contact learns, when they accept, the name our alerts will give the defender:
someone who is the contact of several defenders must know whom an alert is about (both
backends)."""

from __future__ import annotations

from tests.flows.conftest import CANCEL_PIN, Chat, Desk, Pick, onboard


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
