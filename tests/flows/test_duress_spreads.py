"""A panic "called off" with the duress PIN stays open beside the duress alert: from then on it
is as careful as the duress alert (do not contact the phone), in what the desk, the contacts
and the external desk get for it (both backends)."""

from __future__ import annotations

from sqlalchemy import select

from core.models import Alert, AlertEvent, AlertKind, Role
from core.sweep import Sweep
from tests.flows.conftest import DURESS_PIN, Chat, Desk, Pick, onboard
from tests.flows.test_desk_chat import linked
from tests.flows.test_desk_review_fixes import _contact_of

CALL = "Please try to reach them."
CAREFUL = "Do NOT contact their device: another open alert of theirs says"


async def test_a_panic_called_off_with_the_duress_pin_is_not_to_contact_either(
    desk: Desk,
) -> None:
    await linked(desk, Role.responder, "9001")
    pager = Chat(desk, "9001", "en", channel="telegram")
    alice, friend = await onboard(desk, "alice"), desk.chat("alice-friend")
    await _contact_of(desk, alice, friend)
    for said in ("/alert", Pick("skip"), Pick("no")):
        await alice.say(said)
    assert [CALL in m.text for m in await friend.received()] == [True]
    await alice.say(Pick("calloff"))
    assert "Alert called off." in await alice.text(DURESS_PIN)  # as with the real PIN
    async with desk.sessions() as s:
        found = {a.kind: a for a in (await s.execute(select(Alert))).scalars()}
        assert set(found) == {AlertKind.panic, AlertKind.duress}
        assert found[AlertKind.panic].do_not_contact and found[AlertKind.duress].do_not_contact
        panic = found[AlertKind.panic]
        kinds = await s.execute(select(AlertEvent.kind).where(AlertEvent.alert_id == panic.id))
        assert "do_not_contact" in set(kinds.scalars())
    await pager.received()  # the panic's and the duress alert's first notices
    sweep = Sweep(desk.sessions, desk.vault, owner="test")
    for _ in range(2):  # the panic's ladder repeats to the desk while nobody acknowledges it
        desk.clock.advance(minutes=16)
        await sweep.run(desk.clock.now)
    repeats = [m.text for m in await pager.received() if "Still not acknowledged" in m.text]
    assert len(repeats) == 4, repeats  # the panic's two, the duress alert's two
    assert all("Do NOT contact their device" in t for t in repeats), repeats
    assert sum(CAREFUL in t for t in repeats) == 2, repeats  # the panic's
