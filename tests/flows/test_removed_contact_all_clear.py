"""A contact told "may need help" whom the defender then removes still hears the all-clear
of that alert, and nothing else; a contact who asked to stop hears nothing more (both
backends)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from core import alerts, contacts
from core.db import transaction
from core.models import Alert
from tests.flows.conftest import CANCEL_PIN, Chat, Desk, Pick, onboard


async def _add(desk: Desk, defender: Chat, name: str, contact: Chat) -> None:
    for said in ("/settings", Pick("contacts"), Pick("add"), CANCEL_PIN):
        await defender.say(said)
    shown = await defender.say(name)
    code = shown[0].text.split("in person or by phone: ")[1].split("\n")[0]
    await contact.say(code)
    await contact.say(Pick("accept"))
    await contact.received()


async def _remove(defender: Chat, name: str) -> None:
    for said in ("/settings", Pick("contacts"), Pick("remove"), CANCEL_PIN):
        await defender.say(said)
    assert await defender.text(name) == "Removed."


async def test_a_contact_removed_mid_alert_still_hears_the_all_clear(desk: Desk) -> None:
    alice = await onboard(desk)
    sister = desk.chat("sister", language="es")  # removed once alarmed
    brother = desk.chat("brother")  # asks to stop once alarmed
    cousin = desk.chat("cousin")  # removed before the alert: never alarmed
    friend = desk.chat("friend")  # stays
    for name, chat in (("sister", sister), ("brother", brother), ("cousin", cousin)):
        await _add(desk, alice, name, chat)
    await _add(desk, alice, "friend", friend)
    await _remove(alice, "cousin")
    await alice.say("/alert")
    for alarmed in (sister, brother, friend):
        said = [m.text for m in await alarmed.received()]
        assert len(said) == 1 and "{handle}" not in said[0], said
    assert await cousin.received() == []
    await _remove(alice, "sister")
    assert "no longer get messages" in await brother.text("/stop")
    async with transaction(desk.sessions) as s:
        alert = (await s.execute(select(Alert))).scalar_one()
        await alerts.resolve(
            s, desk.vault, alert=alert, outcome="safe", actor=f"responder:{uuid.uuid4()}",
            now=desk.clock.now,
        )  # fmt: skip
    told = [m.text for m in await sister.received()]
    assert len(told) == 1 and told[0].startswith("Buenas noticias:"), told  # in her language
    assert [m.text for m in await brother.received()] == []
    assert await cousin.received() == []
    assert ["is all right" in m.text for m in await friend.received()] == [True]


async def test_removed_contacts_leave_room_for_new_ones(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As contacts who asked to stop: a removed one is not counted toward the most allowed."""
    monkeypatch.setattr(contacts, "MAX_CONTACTS", 1)
    alice = await onboard(desk)
    for said in ("/settings", Pick("contacts"), Pick("add"), CANCEL_PIN):
        await alice.say(said)
    assert "in person or by phone" in await alice.text("sister")
    await _remove(alice, "sister")
    for said in ("/settings", Pick("contacts"), Pick("add"), CANCEL_PIN):
        await alice.say(said)
    assert "in person or by phone" in await alice.text("brother")
