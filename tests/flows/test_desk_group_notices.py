"""The responder group as its members see it: no echo of what they did, news of the rest."""

from __future__ import annotations

import uuid

import pytest

from core import alert_handling, notices
from core.db import transaction
from core.models import Alert, AlertState, Defender, DeskGroup, Responder, Role
from tests.flows.conftest import Chat, Desk
from tests.flows.test_desk_chat import Group, fresh, group_code, link_code, open_panic, responder


async def ready(desk: Desk, channel: str = "telegram") -> Group:
    chat = "-1001" if channel == "telegram" else "group.eA=="
    group = Group(desk, channel=channel, address=chat)
    assert "responder group" in await group.say("1", f"/desk {await group_code(desk)}")
    return group


async def member(desk: Desk, chat: str, channel: str = "telegram") -> Responder:
    """A responder whose private chat on ``channel`` is linked."""
    r = await responder(desk, Role.responder)
    me = Chat(desk, chat, "en", channel=channel)
    assert "now linked" in await me.text(f"desk {await link_code(desk, r)}")
    return r


async def handle(desk: Desk, alert: Alert) -> str:
    async with desk.sessions() as s:
        found = await s.get(Defender, alert.defender_id)
        assert found is not None
        return found.handle


@pytest.mark.parametrize("channel", ["telegram", "signal"])
async def test_an_ack_and_a_resolve_from_the_group_are_not_echoed(
    desk: Desk, channel: str
) -> None:
    group = await ready(desk, channel)
    r = await member(desk, "4242", channel)
    alert = await open_panic(desk)
    code = notices.short_code(alert.id)
    assert "EMERGENCY" in await group.heard()
    acked = await group.say("4242", f"ACK {code}")
    assert acked.startswith(f"{r.username} acknowledged alert {code}")
    assert "\n\n" not in acked  # one message: the confirmation, no "acknowledged elsewhere"
    done = await group.say("4242", f"SAFE {code}")
    assert done.startswith(f"{r.username} resolved alert {code}") and "\n\n" not in done
    assert (await fresh(desk, alert)).state is AlertState.resolved
    assert await group.heard() == ""


async def test_a_resolve_elsewhere_reaches_the_group_and_its_buttons_then_say_so(
    desk: Desk,
) -> None:
    group = await ready(desk)
    await member(desk, "4343")
    alert = await open_panic(desk)
    code = notices.short_code(alert.id)
    await group.heard()
    async with transaction(desk.sessions) as s:
        await alert_handling.resolve(
            s,
            desk.vault,
            alert=alert,
            outcome="false_alarm",
            actor=f"responder:{uuid.uuid4()}",
            now=desk.clock.now,
        )
    who = await handle(desk, alert)
    assert await group.heard() == (
        f"Alert {code} ({who}) was resolved by a responder in the desk. Outcome: false alarm."
    )
    assert await group.say("4343", f"ack {code}") == "No open alert has that code."


async def test_an_ack_elsewhere_reaches_the_group_and_a_late_ack_there_is_not_repeated(
    desk: Desk,
) -> None:
    group = await ready(desk)
    r = await member(desk, "4444")
    alert = await open_panic(desk)
    code = notices.short_code(alert.id)
    await group.heard()
    async with transaction(desk.sessions) as s:
        await alert_handling.acknowledge(
            s, desk.vault, alert=alert, responder_id=None, now=desk.clock.now, via="api"
        )
    who = await handle(desk, alert)
    assert await group.heard() == f"Alert {code} ({who}) was acknowledged through the desk API."
    assert await group.say("4444", f"ACK {code}") == f"Alert {code} is already acknowledged."
    done = await group.say("4444", f"SAFE {code}")
    assert done.startswith(f"{r.username} resolved alert {code}")


async def test_the_group_answers_in_the_language_the_desk_chose(desk: Desk) -> None:
    group = await ready(desk)
    await member(desk, "4545")
    alert = await open_panic(desk)
    assert (await group.heard()).startswith("EMERGENCY")  # none chosen yet: English
    assert await group.say("4545", "ACK ZZZZZZ") == "No open alert has that code."
    async with transaction(desk.sessions) as s:
        row = await s.get(DeskGroup, desk.org.id)
        assert row is not None
        row.locale = "es"
    answer = await group.say("4545", "ACK ZZZZZZ")  # the sender's own client is in English
    assert answer == "Ninguna alerta abierta tiene ese código."
    assert (await fresh(desk, alert)).state is AlertState.triggered
