"""A link code redeemed in chat at the moment an admin disables or demotes its responder. The
link read the responder as active (and acting) before the change committed, and linked the chat
afterwards: a responder who may no longer act had a linked chat, paged again as soon as they
were enabled or promoted, and a demoted admin's group code still made a chat the desk's
responder group. The responder is now read under a lock the change waits for, and waits for
(as core.desk_alerts.assign): a link that comes second is refused as for any code that is no
good.

The overlap is forced as in test_assign_race: a blocker holds the change (the responder's row
locked as PATCH /responders locks it; SQLite: the writer's lock) until the link waits on a lock
(PostgreSQL), or is about to (SQLite, where the bot's transaction writes first: the link's
first write waits for the change to commit)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from core import desk_chat
from core.claims import dialect, locked, write_lock
from core.db import transaction
from core.defenders import new_address
from core.models import ChannelAddress, DeskGroup, Responder, Role
from tests.api.conftest import Desk
from tests.engine.test_lock_order import deadlock, overlap

CHANGES: dict[str, dict[str, Any]] = {
    "disabled": {"active": False},
    "demoted": {"role": Role.observer},
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("kind", ["private", "group"])
async def test_a_chat_is_never_linked_for_a_responder_changed_meanwhile(
    desk: Desk, change: str, kind: str
) -> None:
    who = desk.a.responders["responder" if kind == "private" else "admin"]
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        me = await s.get(Responder, who.id)
        assert me is not None
        if kind == "private":
            code, _ = await desk_chat.responder_code(
                s, desk.vault, responder=me, actor="test", now=now
            )
        else:
            code, _ = await desk_chat.group_code(
                s, desk.vault, org_id=me.org_id, created_by=me.id, actor="test", now=now
            )
    chat = str(uuid.uuid4().int % 10**9)
    calling = asyncio.Event()

    async def link() -> object:
        async with transaction(desk.sessions) as s:
            calling.set()
            if kind == "group":
                return await desk_chat.link_group(
                    s, desk.vault, code=code, channel="telegram", group=chat, now=now
                )
            address = new_address(desk.vault, "telegram", chat)
            s.add(address)  # flushed by the link's first write
            return await desk_chat.link_responder(
                s, desk.vault, code=code, address=address, now=now
            )

    started: list[asyncio.Task[object]] = []
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        stmt = select(Responder).where(Responder.id == who.id)
        row = (await blocker.execute(locked(stmt, blocker))).scalar_one()
        for field, value in CHANGES[change].items():
            setattr(row, field, value)
        await blocker.flush()
        started.append(asyncio.create_task(link()))
        if dialect(blocker) == "postgresql":
            await overlap(desk.sessions, 1, started)
        else:
            await asyncio.wait_for(calling.wait(), 10)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    assert not [e for e in done if isinstance(e, BaseException) and deadlock(e)], done
    assert done == [None]
    async with desk.sessions() as s:
        linked = select(ChannelAddress.id).where(ChannelAddress.responder_id == who.id)
        assert (await s.execute(linked)).all() == []
        assert await s.get(DeskGroup, desk.a.org.id) is None
