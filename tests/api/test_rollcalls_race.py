"""An answer and the roll-call's closing at the same moment: the answer lands before the
closing and is counted in its event, or it sees the roll-call closed; never recorded after
the counts were sent. Answering takes a shared lock on the roll-call's row, closing updates
it (PostgreSQL); SQLite has one writer. The overlap is forced as in test_invites_race."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core import rollcall_closing, rollcalls
from core.claims import write_lock
from core.db import transaction
from core.models import Broadcast, BroadcastRecipient, OutboxMessage
from tests.api.conftest import Desk
from tests.api.test_broadcasts import people
from tests.engine.test_lock_order import overlap

NOW = datetime.now(UTC)


async def setup(desk: Desk) -> tuple[Broadcast, uuid.UUID]:
    async with transaction(desk.sessions) as s:
        (d,) = await people(s, desk, desk.a, ("en", "active", "telegram"))
        r = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.a.org.id,
            text="check in now",
            closes_in=timedelta(minutes=10),
            actor="test",
            now=NOW,
        )
    return r, d.id


async def counted(desk: Desk, rid: uuid.UUID) -> dict[str, int]:
    async with transaction(desk.sessions) as s:
        row = await s.scalar(
            select(OutboxMessage).where(OutboxMessage.idempotency_key.startswith(f"rc:{rid.hex}"))
        )
        assert row is not None
        body = json.loads(row.get(desk.vault, "payload_enc") or b"")
    return {k: body["rollcall"][k] for k in ("safe", "help", "unanswered")}


async def test_a_closing_waits_for_an_answer_being_recorded_and_counts_it(desk: Desk) -> None:
    r, defender_id = await setup(desk)

    async def close() -> bool:
        async with transaction(desk.sessions) as s:
            return await rollcall_closing.close(s, desk.vault, rollcall_id=r.id, now=NOW)

    async with transaction(desk.sessions) as answering:
        await write_lock(answering)
        done = await rollcalls.answer(
            answering, rollcall_id=r.id, defender_id=defender_id, said="help", now=NOW
        )
        assert done.outcome is rollcalls.Outcome.recorded
        closing = asyncio.create_task(close())
        await overlap(desk.sessions, 1, [closing])
    assert await asyncio.wait_for(closing, 30)
    assert await counted(desk, r.id) == {"safe": 0, "help": 1, "unanswered": 0}


async def test_an_answer_waits_for_a_closing_under_way_and_sees_it_closed(desk: Desk) -> None:
    r, defender_id = await setup(desk)

    async def answer() -> rollcalls.Answered:
        async with transaction(desk.sessions) as s:
            await write_lock(s)  # as the flow engine's first write does (SQLite)
            seen = await rollcalls.latest_for(s, defender_id, now=NOW)  # read open (PostgreSQL)
            assert seen is not None and seen.id == r.id
            return await rollcalls.answer(
                s, rollcall_id=r.id, defender_id=defender_id, said="safe", now=NOW
            )

    async with transaction(desk.sessions) as closing:
        assert await rollcall_closing.close(closing, desk.vault, rollcall_id=r.id, now=NOW)
        answering = asyncio.create_task(answer())
        await overlap(desk.sessions, 1, [answering])
    done = await asyncio.wait_for(answering, 30)
    assert done.outcome is rollcalls.Outcome.closed
    async with transaction(desk.sessions) as s:
        stored = await s.scalar(
            select(BroadcastRecipient.answer).where(BroadcastRecipient.broadcast_id == r.id)
        )
    assert stored is None
    assert await counted(desk, r.id) == {"safe": 0, "help": 0, "unanswered": 1}
