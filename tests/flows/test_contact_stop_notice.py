"""A trusted contact who sends /stop is no longer alerted: their defender is told, with how
many confirmed contacts remain, so that nobody counts on a contact who is gone (both
backends). Under duress the phone sees what it would see otherwise (R8)."""

from __future__ import annotations

import re

from core.messages import Outbound
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Pick, onboard

CODE = re.compile(r": ([A-Z0-9]{8})\b")
GONE = "A trusted contact asked to stop getting messages."


async def added(defender: Chat, contact: Chat, pin: str, name: str) -> None:
    for said in ("/settings", Pick("contacts"), Pick("add"), pin):
        await defender.say(said)
    found = CODE.search(await defender.text(name))  # in any language
    assert found is not None
    code = found[1]
    await contact.say(code)
    await contact.say(Pick("accept"))
    await defender.received()  # "A contact accepted. You now have…"


def heard(messages: list[Outbound]) -> list[str]:
    return [m.text for m in messages]


async def test_the_defender_hears_that_a_contact_stopped(desk: Desk) -> None:
    """Review: the contact's /stop revoked the link in silence; the defender still believed
    two people would be told if they missed a check-in."""
    alice = await onboard(desk)
    sister, tom = desk.chat("sister"), desk.chat("tom")
    await added(alice, sister, CANCEL_PIN, "sister")
    await added(alice, tom, CANCEL_PIN, "tom")
    assert "no longer get messages" in await tom.text("/stop")
    told = heard(await alice.received())
    assert told == [f"{GONE} You now have 1 confirmed contact."]
    await sister.say("/stop")
    assert heard(await alice.received()) == [f"{GONE} You now have 0 confirmed contacts."]
    await sister.say("/stop")  # nothing left to stop: nothing more to tell
    assert await alice.received() == []


async def test_every_defender_of_a_shared_contact_hears_it_in_their_language(
    desk: Desk,
) -> None:
    alice, bea = await onboard(desk, "alice"), await onboard(desk, "bea", language="es")
    friend = desk.chat("friend")
    await added(alice, friend, CANCEL_PIN, "friend")
    await added(bea, friend, CANCEL_PIN, "amiga")
    await friend.say("/stop")
    assert heard(await alice.received()) == [f"{GONE} You now have 0 confirmed contacts."]
    (spanish,) = heard(await bea.received())
    assert "0" in spanish and GONE not in spanish  # translated


async def test_a_contact_removed_under_duress_stopping_is_not_heard(desk: Desk) -> None:
    """A contact "removed" with the duress PIN is still alerted, only hidden from the phone:
    its /stop must not reveal on the phone that it was there all along."""
    alice = await onboard(desk)
    friend = desk.chat("friend")
    await added(alice, friend, CANCEL_PIN, "friend")
    for said in ("/settings", Pick("contacts"), Pick("remove"), DURESS_PIN, "friend"):
        await alice.say(said)
    await alice.received()
    await friend.say("/stop")
    assert await alice.received() == []


async def test_a_contact_added_under_duress_stopping_looks_like_a_real_one(desk: Desk) -> None:
    alice, bob = await onboard(desk, "alice"), await onboard(desk, "bob")
    friend, captor = desk.chat("friend"), desk.chat("captor")
    await added(alice, friend, CANCEL_PIN, "friend")
    await added(bob, captor, DURESS_PIN, "friend")
    await friend.say("/stop")
    await captor.say("/stop")
    real, forced = await alice.received(), await bob.received()
    assert heard(real) == [f"{GONE} You now have 0 confirmed contacts."]
    assert [m.to_json() for m in real] == [m.to_json() for m in forced]


async def test_a_defender_hidden_by_a_forced_deletion_hears_nothing_of_it(desk: Desk) -> None:
    """Their data "deleted" with the duress PIN, they are a stranger to the phone from then
    on: a contact of theirs stopping must not show them still there (R8)."""
    alice = await onboard(desk)
    friend = desk.chat("friend")
    await added(alice, friend, CANCEL_PIN, "friend")
    for said in ("/settings", Pick("delete"), DURESS_PIN):
        await alice.say(said)
    defender = await alice.defender()
    assert defender is not None and defender.status.value == "hidden"
    await alice.received()
    assert "no longer get messages" in await friend.text("/stop")
    assert await alice.received() == []
