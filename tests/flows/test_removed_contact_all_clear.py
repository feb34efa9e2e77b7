"""A contact told "may need help" whom the defender then removes still hears the all-clear
of that alert, and nothing else; a contact who asked to stop hears nothing more; an alarm
not yet sent when its contact is removed or opts out never goes (both backends)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, update

from core import alert_handling, contacts
from core.db import transaction
from core.messages import WITHDRAWN
from core.models import (
    Alert,
    ChannelAddress,
    Consent,
    OutboxMessage,
    OutboxState,
    TrustedContact,
)
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


async def _sent(desk: Desk) -> None:
    """The dispatcher's part: everything queued so far has reached its chat."""
    async with transaction(desk.sessions) as s:
        await s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.state == OutboxState.pending)
            .values(state=OutboxState.delivered, payload_enc=None)
        )


async def _resolve(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        alert = (await s.execute(select(Alert))).scalar_one()
        await alert_handling.resolve(
            s, desk.vault, alert=alert, outcome="safe", actor=f"responder:{uuid.uuid4()}",
            now=desk.clock.now,
        )  # fmt: skip


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
    await _sent(desk)
    await _remove(alice, "sister")
    assert "no longer get messages" in await brother.text("/stop")
    await _resolve(desk)
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


async def _alarms(desk: Desk, chat: Chat) -> list[tuple[OutboxState, str | None, bool]]:
    """(state, last error, payload kept) of every alert's message queued for ``chat``."""
    index = desk.vault.address_index(chat.channel, chat.address)
    async with desk.sessions() as s:
        rows = (await s.execute(select(OutboxMessage))).scalars().all()
        addresses = (await s.execute(select(ChannelAddress))).scalars()
        ids = {a.id for a in addresses if a.blind_index == index}
    mine = [r for r in rows if r.address_id in ids and r.alert_id is not None]
    return [(r.state, r.last_error, r.payload_enc is not None) for r in mine]


async def test_an_alarm_not_yet_sent_never_reaches_a_contact_removed_or_gone(desk: Desk) -> None:
    """The defender removes a contact, or the contact sends /stop, while the alert's alarm to
    them still waits to go (a rate limit, a slow channel): it is withdrawn, its text shredded,
    and they get no all-clear for an alert that never reached them. The others' still go."""
    alice = await onboard(desk)
    sister, brother, friend = desk.chat("sister"), desk.chat("brother"), desk.chat("friend")
    for name, chat in (("sister", sister), ("brother", brother), ("friend", friend)):
        await _add(desk, alice, name, chat)
    await alice.say("/alert")
    for chat in (sister, brother, friend):
        assert await _alarms(desk, chat) == [(OutboxState.pending, None, True)]
    await _remove(alice, "sister")
    assert "no longer get messages" in await brother.text("/stop")
    withdrawn = (OutboxState.failed, WITHDRAWN, False)
    assert await _alarms(desk, sister) == [withdrawn]
    assert await _alarms(desk, brother) == [withdrawn]
    assert await _alarms(desk, friend) == [(OutboxState.pending, None, True)]
    alarmed = [m.text for m in await friend.received()]
    assert len(alarmed) == 1 and "is all right" not in alarmed[0], alarmed
    await _sent(desk)
    await _resolve(desk)
    assert len(await _alarms(desk, sister)) == 1  # no all-clear: she never heard of it
    assert ["is all right" in m.text for m in await friend.received()] == [True]


@pytest.mark.parametrize("queued", [False, True], ids=["open", "closed"])
@pytest.mark.parametrize("how", ["removed", "deleted"])
async def test_a_contact_alarmed_then_let_go_can_still_stop_the_all_clear(
    desk: Desk, how: str, queued: bool
) -> None:
    """The defender removes a contact they alarmed, or deletes their data (the contact's
    record with it): the contact is still owed the all-clear, but their /stop found no contact
    (the stranger's greeting) and it went all the same. Now /stop records it: nothing more
    goes, whether the alert is still open or its all-clear already waits to go."""
    alice = await onboard(desk)
    sister = desk.chat("sister")
    await _add(desk, alice, "sister", sister)
    await alice.say("/alert")
    assert len(await sister.received()) == 1
    await _sent(desk)
    if how == "removed":
        await _remove(alice, "sister")
    else:
        for said in ("/settings", Pick("delete")):
            await alice.say(said)
        assert "deleted" in await alice.text(CANCEL_PIN)
    if queued:
        await _resolve(desk)
        assert len(await _alarms(desk, sister)) == 2  # the alarm and its all-clear, waiting
    assert "no longer get messages" in await sister.text("/stop")
    if not queued:
        await _resolve(desk)
    assert await sister.received() == []
    async with desk.sessions() as s:
        (contact,) = (await s.execute(select(TrustedContact))).scalars()
    assert (contact.consent, contact.address_id) == (Consent.revoked, None)
    assert "private service" in await sister.text("/stop")  # nothing more to stop
