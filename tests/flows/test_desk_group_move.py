"""A Telegram group upgraded to a supergroup gets a new chat id: it stays the responder group."""

from __future__ import annotations

import dataclasses

from core import notices
from tests.flows.conftest import Desk
from tests.flows.test_desk_chat import Group, open_panic
from tests.flows.test_desk_group_notices import member, ready

SUPERGROUP = "-1009876543210"


async def moved(group: Group, to: str) -> None:
    """Telegram's service message in the old group chat: ``migrate_to_chat_id``."""
    await group.desk.engine.handle(
        dataclasses.replace(group.inbound("", None, None), sender=None, moved_to=to)
    )


async def test_the_group_keeps_its_link_and_its_queue_under_the_new_id(desk: Desk) -> None:
    old = await ready(desk)
    await member(desk, "5151")
    alert = await open_panic(desk)  # its post is queued for the old chat id
    await moved(old, SUPERGROUP)
    new = Group(desk, address=SUPERGROUP)
    assert "EMERGENCY" in await new.heard()  # what was queued follows the group
    assert await old.heard() == ""
    code = notices.short_code(alert.id)
    assert f"acknowledged alert {code}" in await new.say("5151", f"ACK {code}")
    assert await old.say("5151", f"SAFE {code}") == ""  # the old id is no group of ours


async def test_only_the_responder_group_moves_and_only_once(desk: Desk) -> None:
    await moved(Group(desk, address="-1005555"), SUPERGROUP)  # another group the bot is in
    assert await Group(desk, address=SUPERGROUP).say("x", "ACK ZZZZZZ") == ""  # stored nothing
    old = await ready(desk)
    event = dataclasses.replace(old.inbound("", None, None), sender=None, moved_to=SUPERGROUP)
    await desk.engine.handle(event)
    await desk.engine.handle(dataclasses.replace(event, moved_to="-1000000000001"))  # a replay
    await member(desk, "5252")
    new = Group(desk, address=SUPERGROUP)
    assert "responder group" in await new.heard()  # the link's confirmation, still queued
    assert await new.say("5252", "ACK ZZZZZZ") == "No open alert has that code."
    assert await Group(desk, address="-1000000000001").say("5252", "ACK ZZZZZZ") == ""
