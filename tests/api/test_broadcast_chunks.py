"""A broadcast's fan-out is written a chunk of defenders per transaction: other writers (a
panic) commit between chunks, and a fan-out cut short is finished by the sweep, once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from core import broadcast_chunks, broadcast_resume, broadcasts, outbox, rollcalls
from core.db import transaction
from core.models import AuditEntry, Broadcast, BroadcastRecipient, Defender, OutboxMessage
from core.sweep import Sweep
from tests.api.conftest import Desk
from tests.api.test_broadcasts import TEXT, people

N = 10  # defenders: chunks of 3, 3, 3 and 1


class Crash(BaseException):
    """The process dying between two chunks (not an error the request path would catch)."""


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broadcast_chunks, "CHUNK", 3)


def on_each_chunk(
    monkeypatch: pytest.MonkeyPatch, hook: Callable[[int], None]
) -> list[threading.Thread]:
    """Call ``hook(n)`` (n: 1, 2, ...) as each chunk's rows are encrypted, before its
    transaction; returns the threads it ran in."""
    rows, threads, calls = outbox.rows, [], [0]

    def encrypting(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        threads.append(threading.current_thread())
        calls[0] += 1
        hook(calls[0])
        return rows(*args, **kwargs)

    monkeypatch.setattr(outbox, "rows", encrypting)
    return threads


async def state(desk: Desk) -> tuple[Broadcast, list[OutboxMessage], list[BroadcastRecipient]]:
    async with transaction(desk.sessions) as s:
        b = (await s.scalars(select(Broadcast))).one()
        prefix = f"b:{b.id.hex}:"
        queued = await s.scalars(
            select(OutboxMessage).where(OutboxMessage.idempotency_key.startswith(prefix))
        )
        recipients = await s.scalars(
            select(BroadcastRecipient).where(BroadcastRecipient.broadcast_id == b.id)
        )
        return b, list(queued), list(recipients)


async def assert_once_each(desk: Desk, defenders: list[Defender]) -> Broadcast:
    """Exactly one outbox row and one recipient row per defender, the recipient row naming
    that defender's outbox row; the fan-out finished, ``recipients`` right."""
    b, queued, recipients = await state(desk)
    keys = sorted(r.idempotency_key for r in queued)
    assert keys == sorted(broadcast_chunks.key(b.id, d.id) for d in defenders)
    by_id = {r.id: r for r in queued}
    assert sorted(r.defender_id for r in recipients) == sorted(d.id for d in defenders)
    for r in recipients:
        assert r.outbox_id is not None
        assert by_id[r.outbox_id].idempotency_key == broadcast_chunks.key(b.id, r.defender_id)
    assert b.fan_out_since is None and b.recipients == len(defenders)
    return b


async def test_other_writers_commit_between_a_fan_outs_chunks(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with transaction(desk.sessions) as s:
        defenders = await people(s, desk, desk.a, *[("es", "active", "telegram")] * N)
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, int, int, int]] = []

    async def meanwhile(n: int) -> None:
        """Another writer (a panic coming in) commits, and the desk lists its broadcasts."""
        async with transaction(desk.sessions) as s:
            await s.execute(
                update(Defender).where(Defender.id == defenders[0].id).values(locale=f"x{n}")
            )
        async with transaction(desk.sessions) as s:
            written = await s.scalar(select(func.count()).select_from(BroadcastRecipient))
            found = (await s.scalars(select(Broadcast))).first()
            if found is None:
                seen.append((n, int(written or 0), 0, 0))
                return
            counted = (await broadcasts.counts(s, [found.id]))[found.id]
            seen.append((n, int(written or 0), found.recipients, counted.pending))

    def hook(n: int) -> None:
        asyncio.run_coroutine_threadsafe(meanwhile(n), loop).result(timeout=20)

    threads = on_each_chunk(monkeypatch, hook)
    async with await desk.client(desk.a, "admin") as c:
        sent = await c.post("/api/v1/broadcasts", json={"text": TEXT})
    assert sent.status_code == 201, sent.text
    body = sent.json()
    assert (body["recipients"], body["pending"], body["delivered"]) == (N, N, 0)
    # Before each chunk another transaction committed a write, and saw the chunks before it:
    # the broadcast already counted for all ten, the rows not yet written as pending.
    assert seen == [(1, 0, 0, 0), (2, 3, N, N), (3, 6, N, N), (4, 9, N, N)]
    assert not any(t is threading.main_thread() for t in threads)  # each off the event loop
    b = await assert_once_each(desk, defenders)
    async with transaction(desk.sessions) as s:
        assert (await s.get(Defender, defenders[0].id)).locale == "x4"  # type: ignore[union-attr]
        entries = list(await s.scalars(select(AuditEntry).where(AuditEntry.target == str(b.id))))
    assert [(e.action, e.detail) for e in entries] == [("broadcast.send", {"recipients": N})]
    async with await desk.client(desk.a, "observer") as c:
        (listed,) = (await c.get("/api/v1/broadcasts")).json()
    assert (listed["recipients"], listed["pending"]) == (N, N)


async def test_a_rollcall_answers_with_the_same_counts_when_written_in_chunks(
    desk: Desk,
) -> None:
    async with transaction(desk.sessions) as s:
        defenders = await people(s, desk, desk.a, *[("fr", "active", "signal")] * N)
    async with await desk.client(desk.a, "responder") as c:
        started = await c.post("/api/v1/rollcalls", json={"text": TEXT, "closes_in_minutes": 30})
    assert started.status_code == 201, started.text
    body = started.json()
    counted = ("recipients", "unanswered", "safe", "help", "pending")
    assert {k: body[k] for k in counted} == {
        "recipients": N,
        "unanswered": N,
        "safe": 0,
        "help": 0,
        "pending": N,
    }
    b = await assert_once_each(desk, defenders)
    _b, queued, _r = await state(desk)
    said = outbox.payload(desk.vault, queued[-1])
    assert [c.key for c in said.choices] == [k.key for k in rollcalls.choices(b.id, "fr")]


async def crash_after_the_first_chunk(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, now: datetime
) -> list[Defender]:
    async with transaction(desk.sessions) as s:
        defenders = await people(s, desk, desk.a, *[("pt", "active", "telegram")] * N)

    def hook(n: int) -> None:
        if n == 2:
            raise Crash

    on_each_chunk(monkeypatch, hook)
    with pytest.raises(Crash):
        async with transaction(desk.sessions) as s:
            await broadcasts.send(
                s, desk.vault, org_id=desk.a.org.id, text=TEXT, actor="t", now=now
            )
    monkeypatch.undo()
    monkeypatch.setattr(broadcast_chunks, "CHUNK", 3)
    b, queued, recipients = await state(desk)
    assert b.fan_out_since == now and b.recipients == N
    assert len(queued) == len(recipients) == 3  # the first chunk, committed with the broadcast
    return defenders


async def test_a_fan_out_cut_short_is_finished_by_the_sweep_once(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    defenders = await crash_after_the_first_chunk(desk, monkeypatch, now)
    sweep = Sweep(desk.sessions, desk.vault, owner="w1")
    await sweep.run(now + timedelta(seconds=5))  # the request might still be writing it
    assert len((await state(desk))[2]) == 3
    await sweep.run(now + broadcast_resume.LEASE + timedelta(seconds=1))
    await assert_once_each(desk, defenders)
    await sweep.run(now + broadcast_resume.LEASE + timedelta(seconds=9))  # nothing more
    await assert_once_each(desk, defenders)


async def test_resumes_run_twice_and_at_once_double_nothing(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    defenders = await crash_after_the_first_chunk(desk, monkeypatch, now)
    # Both resumes read who is missing and encrypt their first chunk before either writes.
    both = threading.Barrier(2, timeout=20)
    on_each_chunk(monkeypatch, lambda n: both.wait() if n <= 2 else None)
    later = now + broadcast_resume.LEASE + timedelta(seconds=1)
    await asyncio.gather(
        broadcast_resume.resume_due(desk.sessions, desk.vault, later),
        broadcast_resume.resume_due(desk.sessions, desk.vault, later),
    )
    await assert_once_each(desk, defenders)
    assert await broadcast_resume.resume_due(desk.sessions, desk.vault, later) == 0
    await assert_once_each(desk, defenders)


async def test_a_failed_chunk_still_answers_and_the_sweep_finishes_it(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broadcast committed with its first chunk: the desk is told it is queued (not an
    error, lest it send it again), and the sweep writes the rest."""
    async with transaction(desk.sessions) as s:
        defenders = await people(s, desk, desk.a, *[("ar", "active", "signal")] * N)

    def hook(n: int) -> None:
        if n == 3:
            raise RuntimeError("the database went away")

    on_each_chunk(monkeypatch, hook)
    async with await desk.client(desk.a, "token") as c:
        sent = await c.post("/api/v1/broadcasts", json={"text": TEXT})
    assert sent.status_code == 201, sent.text
    assert sent.json()["recipients"] == N
    b, queued, _r = await state(desk)
    assert b.fan_out_since is not None and len(queued) == 6
    later = b.fan_out_since + broadcast_resume.LEASE + timedelta(seconds=1)
    assert await broadcast_resume.resume_due(desk.sessions, desk.vault, later) == 1
    await assert_once_each(desk, defenders)


async def test_a_closed_rollcall_is_finished_without_more_messages(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        await people(s, desk, desk.a, *[("en", "active", "telegram")] * N)

    def hook(n: int) -> None:
        if n == 2:
            raise Crash

    on_each_chunk(monkeypatch, hook)
    with pytest.raises(Crash):
        async with transaction(desk.sessions) as s:
            await rollcalls.start(
                s,
                desk.vault,
                org_id=desk.a.org.id,
                text=TEXT,
                closes_in=timedelta(minutes=1),
                actor="t",
                now=now,
            )
    later = now + timedelta(minutes=2)  # past its closing time: answers no longer count
    assert await broadcast_resume.resume_due(desk.sessions, desk.vault, later) == 1
    b, queued, recipients = await state(desk)
    assert b.fan_out_since is None and len(queued) == len(recipients) == b.recipients == 3
