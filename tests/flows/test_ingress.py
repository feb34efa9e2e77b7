"""A chat's messages are read up to an allowance (SECURITY.md R21, abuse case 14): a flood
from one chat is let go unread past it, so that it cannot hold up everyone else's messages;
the defender is told once; an alert, a PIN (the duress PIN's silent alert) and a location are
read whatever the flood. Both backends."""

from __future__ import annotations

from sqlalchemy import select

from core.messages import Inbound
from core.models import Alert, AlertKind
from flows.engine import INGRESS_BURST, INGRESS_PER_MINUTE
from tests.flows.conftest import DURESS_PIN, Desk, onboard

TOO_FAST = "You are sending messages faster than we can read them"


async def kinds(desk: Desk) -> list[AlertKind]:
    async with desk.sessions() as s:
        return [a.kind for a in (await s.execute(select(Alert))).scalars()]


async def flood(desk: Desk, chat_name: str) -> list[str]:
    """Messages from an onboarded defender until the allowance is spent and one past it;
    returns what each got (the answers of the flood's last messages)."""
    chat = await onboard(desk, chat_name)  # onboarding's answers count too
    got = []
    for i in range(INGRESS_BURST + 5):
        got.append(await chat.text(f"hello {i}"))
    return got


async def test_a_flood_is_answered_once_then_not_read(desk: Desk) -> None:
    got = await flood(desk, "flooder")
    answered = [t for t in got if t]
    told = [t for t in got if TOO_FAST in t]
    assert len(told) == 1 and "/sos" in told[0]  # told once, with how to ask for help
    assert got.index(told[0]) < INGRESS_BURST  # onboarding's answers were counted too
    assert got[-3:] == ["", "", ""]  # then nothing is read, nor answered
    assert len(answered) < len(got)


async def test_an_alert_and_the_duress_pin_are_read_in_a_flood(desk: Desk) -> None:
    chat = await onboard(desk, "flooder")
    for i in range(INGRESS_BURST + 5):
        await chat.say(f"hello {i}")
    assert await chat.text("what now") == ""  # over it
    await chat.say(DURESS_PIN)  # idle: the duress PIN's silent alert
    assert await kinds(desk) == [AlertKind.duress]
    assert "Alert sent" in await chat.text("/sos")
    assert sorted(await kinds(desk)) == sorted([AlertKind.duress, AlertKind.panic])


async def test_another_chat_is_read_during_a_flood_and_the_allowance_comes_back(
    desk: Desk,
) -> None:
    flooder = await onboard(desk, "flooder")
    for i in range(INGRESS_BURST + 5):
        await flooder.say(f"hello {i}")
    other = await onboard(desk, "other")
    assert "Alert sent" in await other.text("/sos")
    assert await flooder.text("/help me") == ""
    desk.clock.advance(seconds=60 / INGRESS_PER_MINUTE)  # one message's worth
    assert "Here is what you can send" in await flooder.text("/help")  # read, answered
    assert await flooder.text("/help") == ""  # over it again: not told again so soon
    desk.clock.advance(minutes=11)  # the allowance is whole again, and the notice may come
    said = [await flooder.text("hello") for _ in range(INGRESS_BURST + 2)]
    assert all(TOO_FAST not in t and t for t in said[:INGRESS_BURST])
    assert TOO_FAST in said[INGRESS_BURST] and said[-1] == ""


async def test_a_changed_safety_number_is_read_in_a_flood(desk: Desk) -> None:
    """R6 on receipt: signal-cli's word that it could not decrypt a message, the sender's
    safety number having changed, raises the desk's alert even from a chat over its
    allowance."""
    chat = await onboard(desk, "+15550100", channel="signal")
    for i in range(INGRESS_BURST + 5):
        await chat.say(f"hello {i}")
    assert await chat.text("what now") == ""  # over it
    changed = Inbound(
        channel="signal",
        address=chat.address,
        message_id="+15550100:1764000000000",
        received_at=desk.clock.now,
        key_changed=True,
    )
    await desk.engine.handle(changed)
    assert await kinds(desk) == [AlertKind.identity_changed]
