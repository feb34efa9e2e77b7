"""Roll-calls through the desk API: started like a broadcast, answers shown by handle."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from core import defenders, outbox, rollcalls
from core.db import transaction
from core.models import AuditEntry, Broadcast, Defender, OutboxMessage
from core.sweep import Sweep
from tests.api.conftest import Desk
from tests.api.test_broadcasts import people

TEXT = "Raid last night. Everyone check in now."


async def test_it_asks_every_enrolled_defender_and_shows_answers_by_handle(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        es, fr, paused = await people(
            s,
            desk,
            desk.a,
            ("es", "active", "telegram"),
            ("fr", "active", "signal"),
            ("en", "paused", "telegram"),
        )
    async with await desk.client(desk.a, "responder") as c:
        started = await c.post("/api/v1/rollcalls", json={"text": TEXT, "closes_in_minutes": 90})
    assert started.status_code == 201, started.text
    body = started.json()
    # A defender whose check-ins are paused is asked too: a roll-call is for everyone.
    assert (body["recipients"], body["unanswered"], body["open"]) == (3, 3, True)
    rid = uuid.UUID(body["id"])
    async with transaction(desk.sessions) as s:
        row = await s.scalar(
            select(OutboxMessage).where(
                OutboxMessage.idempotency_key == f"b:{rid.hex}:{es.id.hex}"
            )
        )
        assert row is not None and row.priority == 3
        said = outbox.payload(desk.vault, row)
        assert [c.label for c in said.choices] == ["Estoy bien", "Necesito ayuda"]
        done = await rollcalls.answer(
            s, rollcall_id=rid, defender_id=fr.id, said="help", now=datetime.now(UTC)
        )
        assert done.outcome is rollcalls.Outcome.recorded
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.target == str(rid)))
        assert entry is not None and entry.action == "rollcall.start"
    async with await desk.client(desk.a, "observer") as c:
        shown = (await c.get(f"/api/v1/rollcalls/{rid}")).json()
        listed = (await c.get("/api/v1/rollcalls")).json()
        broadcasts = (await c.get("/api/v1/broadcasts")).json()
    assert (shown["safe"], shown["help"], shown["unanswered"]) == (0, 1, 2)
    answers = {a["handle"]: a["answer"] for a in shown["answers"]}
    assert answers == {es.handle: None, fr.handle: "help", paused.handle: None}
    assert all(set(a) == {"handle", "answer", "answered_at"} for a in shown["answers"])
    assert [r["id"] for r in listed] == [str(rid)]
    assert broadcasts == []  # a roll-call is listed with the roll-calls only


async def test_another_organisations_rollcall_is_not_found(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        theirs = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.b.org.id,
            text=TEXT,
            closes_in=timedelta(minutes=5),
            actor="test",
            now=datetime.now(UTC),
        )
    async with await desk.client(desk.a, "admin") as c:
        foreign = await c.get(f"/api/v1/rollcalls/{theirs.id}")
        unknown = await c.get(f"/api/v1/rollcalls/{uuid.uuid4()}")
        plain = (await c.post("/api/v1/broadcasts", json={"text": "not a roll-call"})).json()
        broadcast = await c.get(f"/api/v1/rollcalls/{plain['id']}")
        listed = (await c.get("/api/v1/rollcalls")).json()
    assert (foreign.status_code, unknown.status_code, broadcast.status_code) == (404, 404, 404)
    assert listed == []


@pytest.mark.parametrize(
    "body",
    [
        {"text": TEXT},
        {"closes_in_minutes": 30},
        {"text": "", "closes_in_minutes": 30},
        {"text": TEXT, "closes_in_minutes": 0},
        {"text": TEXT, "closes_in_minutes": 24 * 60 + 1},
        {"text": TEXT, "closes_in_minutes": "soon"},
        {"text": "x" * 2001, "closes_in_minutes": 30},
    ],
)
async def test_it_refuses_a_bad_rollcall(desk: Desk, body: dict[str, Any]) -> None:
    async with await desk.client(desk.a, "token") as c:
        answer = await c.post("/api/v1/rollcalls", json=body)
    assert answer.status_code == 422
    async with transaction(desk.sessions) as s:
        assert (await s.scalars(select(Broadcast))).first() is None


async def test_an_observer_cannot_start_a_rollcall(desk: Desk) -> None:
    async with await desk.client(desk.a, "observer") as c:
        answer = await c.post("/api/v1/rollcalls", json={"text": TEXT, "closes_in_minutes": 5})
    assert answer.status_code == 403


async def test_a_closed_rollcall_takes_no_answer(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        (d,) = await people(s, desk, desk.a, ("en", "active", "telegram"))
        r = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.a.org.id,
            text=TEXT,
            closes_in=timedelta(minutes=5),
            actor="test",
            now=datetime.now(UTC),
        )
        await s.execute(
            update(Broadcast).where(Broadcast.id == r.id).values(closed_at=datetime.now(UTC))
        )
    async with transaction(desk.sessions) as s:
        done = await rollcalls.answer(
            s, rollcall_id=r.id, defender_id=d.id, said="safe", now=datetime.now(UTC)
        )
    assert done.outcome is rollcalls.Outcome.closed


async def events_of(desk: Desk, rid: uuid.UUID) -> list[dict[str, Any]]:
    async with transaction(desk.sessions) as s:
        rows = await s.scalars(
            select(OutboxMessage).where(
                OutboxMessage.idempotency_key.startswith(f"rc:{rid.hex}:rollcall.closed")
            )
        )
        return [json.loads(r.get(desk.vault, "payload_enc") or b"") for r in rows]


async def test_the_engine_closes_it_at_its_time_and_tells_the_webhooks(desk: Desk) -> None:
    t0 = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        safe, _silent = await people(
            s, desk, desk.a, ("en", "active", "telegram"), ("ar", "active", "signal")
        )
        r = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.a.org.id,
            text=TEXT,
            closes_in=timedelta(minutes=10),
            actor="test",
            now=t0,
        )
        await rollcalls.answer(s, rollcall_id=r.id, defender_id=safe.id, said="safe", now=t0)
    sweep = Sweep(desk.sessions, desk.vault, owner="w1")
    await sweep.run(t0 + timedelta(minutes=9))
    assert await events_of(desk, r.id) == []  # not yet
    await sweep.run(t0 + timedelta(minutes=10))
    await sweep.run(t0 + timedelta(minutes=11))  # once only
    (sent,) = await events_of(desk, r.id)
    assert desk.a.webhook is not None
    assert (sent["type"], sent["org"], sent["alert"]) == (
        "rollcall.closed",
        str(desk.a.org.id),
        None,
    )
    counts = {k: sent["rollcall"][k] for k in ("recipients", "safe", "help", "unanswered")}
    assert counts == {"recipients": 2, "safe": 1, "help": 0, "unanswered": 1}
    raw = json.dumps(sent)
    assert TEXT not in raw and safe.handle not in raw  # counts only: no text, no names
    async with transaction(desk.sessions) as s:
        late = await rollcalls.answer(
            s, rollcall_id=r.id, defender_id=safe.id, said="help", now=t0 + timedelta(minutes=12)
        )
        row = await s.scalar(
            select(OutboxMessage).where(
                OutboxMessage.idempotency_key.startswith(f"rc:{r.id.hex}:")
            )
        )
    assert late.outcome is rollcalls.Outcome.closed
    assert row is not None and row.webhook_id == desk.a.webhook.id and row.priority == 3


async def test_a_responder_closes_it_early_once(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        await people(s, desk, desk.a, ("en", "active", "telegram"))
    async with await desk.client(desk.a, "responder") as c:
        started = (
            await c.post("/api/v1/rollcalls", json={"text": TEXT, "closes_in_minutes": 600})
        ).json()
        closed = await c.post(f"/api/v1/rollcalls/{started['id']}/close")
        again = await c.post(f"/api/v1/rollcalls/{started['id']}/close")
    async with await desk.client(desk.b, "admin") as c:
        foreign = await c.post(f"/api/v1/rollcalls/{started['id']}/close")
    assert closed.status_code == 200, closed.text
    assert (closed.json()["open"], closed.json()["unanswered"]) == (False, 1)
    assert closed.json()["closed_at"] is not None
    assert (again.status_code, foreign.status_code) == (409, 404)
    rid = uuid.UUID(started["id"])
    (sent,) = await events_of(desk, rid)
    assert sent["rollcall"]["unanswered"] == 1
    async with transaction(desk.sessions) as s:
        actions = list(
            await s.scalars(select(AuditEntry.action).where(AuditEntry.target == str(rid)))
        )
    assert sorted(actions) == ["rollcall.close", "rollcall.start"]


async def test_a_deletion_forgets_the_defenders_answers(desk: Desk) -> None:
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        gone, kept = await people(
            s, desk, desk.a, ("en", "active", "telegram"), ("es", "active", "telegram")
        )
        r = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.a.org.id,
            text=TEXT,
            closes_in=timedelta(minutes=10),
            actor="test",
            now=now,
        )
        for d in (gone, kept):
            await rollcalls.answer(s, rollcall_id=r.id, defender_id=d.id, said="safe", now=now)
    async with transaction(desk.sessions) as s:
        found = await s.get(Defender, gone.id)
        assert found is not None
        await defenders.delete_data(s, defender=found)
    async with await desk.client(desk.a, "admin") as c:
        shown = (await c.get(f"/api/v1/rollcalls/{r.id}")).json()
    assert [a["handle"] for a in shown["answers"]] == [kept.handle]
    assert (shown["safe"], shown["unanswered"]) == (1, 0)


async def test_the_list_counts_each_rollcall_apart(desk: Desk) -> None:
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        one, two = await people(
            s, desk, desk.a, ("en", "active", "telegram"), ("pt", "active", "signal")
        )
        made = []
        for minutes in (1, 2, 3):
            made.append(
                await rollcalls.start(
                    s,
                    desk.vault,
                    org_id=desk.a.org.id,
                    text=TEXT,
                    closes_in=timedelta(minutes=10),
                    actor="test",
                    now=now + timedelta(minutes=minutes),
                )
            )
        first, second, _third = made
        await rollcalls.answer(s, rollcall_id=first.id, defender_id=one.id, said="help", now=now)
        await rollcalls.answer(s, rollcall_id=second.id, defender_id=one.id, said="safe", now=now)
        await rollcalls.answer(s, rollcall_id=second.id, defender_id=two.id, said="safe", now=now)
    async with await desk.client(desk.a, "token") as c:
        listed = (await c.get("/api/v1/rollcalls")).json()
    shown = [(r["safe"], r["help"], r["unanswered"], r["pending"]) for r in listed]
    assert shown == [(0, 0, 2, 2), (2, 0, 0, 2), (0, 1, 1, 2)]  # newest first
