"""A "delete my data" forced with the duress PIN (both backends): the phone sees what a real
deletion shows from then on, while the desk keeps everything, still hears the defender's
alerts and missed check-ins, and can restore them (core.defenders.hide)."""

from __future__ import annotations

from sqlalchemy import select

from core import desk_defenders
from core.db import transaction
from core.models import (
    Alert,
    AlertKind,
    CheckIn,
    Defender,
    DefenderStatus,
    OutboxMessage,
    TrustedContact,
)
from core.outbox import payload
from core.sweep import Sweep
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Event, Pick, onboard
from tests.flows.test_desk_review_fixes import _contact_of
from tests.flows.test_panic import alerts

AFTERWARDS = (
    "hello",
    "/menu",
    "/sos",
    Pick("panic"),
    "/settings",
    CANCEL_PIN,
    "/checkin",
    "/help",
)


async def _prepared(desk: Desk, name: str) -> Chat:
    """A defender with an alert phrase, a confirmed contact and a check-in due in 30 min."""
    chat = await onboard(desk, name)
    for said in (
        "/settings",
        Pick("phrases"),
        CANCEL_PIN,
        Pick("alert_phrase"),
        "Is the bakery open?",
    ):
        await chat.say(said)
    await _contact_of(desk, chat, desk.chat(f"{name}-friend"))
    await chat.say("/checkin")
    await chat.say(Pick("30m"))
    await chat.received()
    return chat


async def _delete(chat: Chat, pin: str) -> list[str]:
    await chat.say("/settings")
    await chat.say(Pick("delete"))
    return [m.text for m in await chat.say(pin)]


async def _hidden(chat: Chat) -> Defender:
    found = await chat.defender()  # the address still points at them: the desk keeps them
    assert found is not None
    return found


async def test_a_forced_deletion_looks_like_a_real_one_from_then_on(desk: Desk) -> None:
    calm, forced = await _prepared(desk, "calm"), await _prepared(desk, "forced")
    assert await _delete(calm, CANCEL_PIN) == await _delete(forced, DURESS_PIN)
    for said in AFTERWARDS:
        seen = [await chat.say(said) for chat in (calm, forced)]
        assert seen[0] == seen[1], (said, seen)
        assert "send it here" in seen[1][-1].text, (said, seen[1])  # a stranger's welcome
    assert await calm.say("Is the bakery open?") == await forced.say("Is the bakery open?")
    hidden = await _hidden(forced)
    assert hidden.status is DefenderStatus.hidden and hidden.cancel_pin_hash is not None
    async with desk.sessions() as s:  # nothing of theirs was deleted
        assert (await s.execute(select(CheckIn).where(CheckIn.defender_id == hidden.id))).first()
        mine = select(TrustedContact).where(TrustedContact.defender_id == hidden.id)
        assert (await s.execute(mine)).first()


async def test_a_hidden_defenders_alert_still_reaches_the_desk_and_contacts(desk: Desk) -> None:
    forced = await _prepared(desk, "forced")
    await _delete(forced, DURESS_PIN)
    friend = desk.chat("forced-friend")
    await friend.received()  # the duress alert's notice
    for said in ("/sos they are here", "Is the bakery open?", Pick("panic")):
        shown = await forced.text(said)
        assert "send it here" in shown and "Alert" not in shown, (said, shown)
    kinds = [(a.kind, a.do_not_contact) for a in await alerts(desk)]
    assert kinds == [(AlertKind.duress, True), (AlertKind.panic, True)], kinds
    told = [m.text for m in await friend.received()]
    assert told and "do not call or message their phone" in told[0], told
    # an edit or a forward of the phrase raises nothing, as for anyone else
    await forced.say(Event(text="/sos", forwarded=True))
    assert len(await alerts(desk)) == 2


async def test_a_hidden_defender_gets_no_reminder_and_a_missed_checkin_escalates(
    desk: Desk,
) -> None:
    forced = await _prepared(desk, "forced")
    await _delete(forced, DURESS_PIN)
    async with transaction(desk.sessions) as s:  # the duress alert is dealt with
        (duress,) = (await s.execute(select(Alert))).scalars()
        duress.state, duress.open_key = duress.state.resolved, None
    sweep = Sweep(desk.sessions, desk.vault, owner="test")
    for _ in range(8):  # past the deadline, the grace and the desk's step
        desk.clock.advance(minutes=10)
        await sweep.run(desk.clock.now)
    assert await forced.received() == []  # no reminder, no second reminder: nothing at all
    missed = [a for a in await alerts(desk) if a.kind is AlertKind.missed_checkin]
    assert [a.do_not_contact for a in missed] == [True]
    async with desk.sessions() as s:
        rows = (await s.execute(select(OutboxMessage))).scalars().all()
        texts = [payload(desk.vault, r).text for r in rows if r.last_error != "withdrawn"]
    assert any("do not call or message their phone" in t for t in texts), texts


async def test_the_desk_restores_a_hidden_defender(desk: Desk) -> None:
    forced = await _prepared(desk, "forced")
    await _delete(forced, DURESS_PIN)
    assert "send it here" in await forced.text("hello")
    async with transaction(desk.sessions) as s:
        mine = await s.get(Defender, (await _hidden(forced)).id)
        assert mine is not None and mine.status is DefenderStatus.hidden
        assert await desk_defenders.restore(
            s, desk.vault, defender=mine, actor="responder:x", now=desk.clock.now
        )
        assert mine.status is DefenderStatus.active
        assert not await desk_defenders.restore(
            s, desk.vault, defender=mine, actor="responder:x", now=desk.clock.now
        )
    menu = await forced.say("/menu")
    assert "send it here" not in menu[-1].text and menu[-1].choices
    assert "Send your PIN" in await forced.text("/safe")
    assert "noted that you are safe" in await forced.text(CANCEL_PIN)
