"""Broadcasts: the desk's one message reaches each active defender once, in their language."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import alerts, broadcasts, outbox, retention, rollcall_closing, rollcalls
from core.db import transaction
from core.i18n import gettext
from core.models import (
    AlertKind,
    AuditEntry,
    Broadcast,
    BroadcastRecipient,
    Defender,
    DefenderStatus,
    OutboxMessage,
    OutboxState,
)
from tests.api.conftest import Desk, Org
from tests.engine.conftest import address

TEXT = "Raid in the north district: stay home tonight."


async def people(s: AsyncSession, desk: Desk, org: Org, *specs: tuple[str, str, str]) -> list[Any]:
    """Defenders of ``org`` as (locale, status, channel or "" for no address)."""
    made = []
    for locale, status, channel in specs:
        d = Defender(
            id=uuid.uuid4(),
            org_id=org.org.id,
            handle=f"h-{uuid.uuid4().hex[:12]}",
            locale=locale,
            status=DefenderStatus(status),
        )
        s.add(d)
        await s.flush()
        if channel:
            s.add(address(desk.vault, channel, uuid.uuid4().hex, defender_id=d.id))
        made.append(d)
    await s.flush()
    return made


async def rows_of(desk: Desk, broadcast_id: str) -> list[OutboxMessage]:
    prefix = f"b:{uuid.UUID(broadcast_id).hex}:"
    async with transaction(desk.sessions) as s:
        found = await s.scalars(
            select(OutboxMessage).where(OutboxMessage.idempotency_key.startswith(prefix))
        )
        return list(found)


async def test_it_reaches_each_enrolled_defender_once_in_their_language(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        es, fr, ar, paused, _onboarding, _nowhere = await people(
            s,
            desk,
            desk.a,
            ("es", "active", "telegram"),
            ("fr", "active", "telegram"),
            ("ar", "active", "signal"),
            ("en", "paused", "telegram"),
            ("en", "onboarding", "telegram"),
            ("en", "active", ""),
        )
        (foreign,) = await people(s, desk, desk.b, ("en", "active", "telegram"))
        # Under duress: their phone may be in other hands, the desk must not write to it.
        (coerced,) = await people(s, desk, desk.a, ("en", "active", "telegram"))
        await alerts.raise_alert(
            s, desk.vault, defender=coerced, kind=AlertKind.duress, now=datetime.now(UTC)
        )
        # A second, preferred address that failed: the one still working is used.
        blocked = address(desk.vault, "signal", "blocked", defender_id=es.id)
        blocked.blocked_at, blocked.preference = datetime.now(UTC), -1
        s.add(blocked)
    async with await desk.client(desk.a, "responder") as c:
        sent = await c.post("/api/v1/broadcasts", json={"text": f"  {TEXT}\n"})
    assert sent.status_code == 201, sent.text
    body = sent.json()
    assert (body["text"], body["recipients"], body["pending"]) == (TEXT, 4, 4)
    rows = await rows_of(desk, body["id"])
    by_defender = {r.idempotency_key.rsplit(":", 1)[1]: r for r in rows}
    # Paused check-ins do not leave a defender out of the network's messages.
    assert set(by_defender) == {es.id.hex, fr.id.hex, ar.id.hex, paused.id.hex}
    assert foreign.id.hex not in by_defender and coerced.id.hex not in by_defender
    for person, channel in ((es, "telegram"), (fr, "telegram"), (ar, "signal")):
        row = by_defender[person.id.hex]
        assert (row.priority, row.channel, row.recipient) == (3, channel, "defender")
        said = outbox.payload(desk.vault, row).text
        framing = gettext(person.locale)("Message from your protection desk:")
        assert said == f"{framing}\n\n{TEXT}"
        if person.locale != "en":
            assert framing != "Message from your protection desk:"
    async with transaction(desk.sessions) as s:
        stored = await s.get(Broadcast, uuid.UUID(body["id"]))
        assert stored is not None and stored.text_enc is not None
        assert TEXT.encode() not in stored.text_enc  # encrypted at rest
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.target == body["id"]))
    assert entry is not None and entry.action == "broadcast.send"
    assert TEXT not in json.dumps(entry.detail) and entry.detail == {"recipients": 4}


async def test_it_lists_broadcasts_newest_first_with_how_they_fared(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        await people(s, desk, desk.a, *[("en", "active", "telegram")] * 3)
    async with await desk.client(desk.a, "token") as c:
        first = (await c.post("/api/v1/broadcasts", json={"text": "one"})).json()
        second = (await c.post("/api/v1/broadcasts", json={"text": "two"})).json()
    rows = await rows_of(desk, first["id"])
    async with transaction(desk.sessions) as s:
        for row, state in zip(rows, (OutboxState.delivered, OutboxState.dead), strict=False):
            await s.execute(
                update(OutboxMessage).where(OutboxMessage.id == row.id).values(state=state)
            )
    async with await desk.client(desk.a, "observer") as c:
        listed = (await c.get("/api/v1/broadcasts")).json()
    async with await desk.client(desk.b, "admin") as c:
        theirs = (await c.get("/api/v1/broadcasts")).json()
    assert [b["id"] for b in listed] == [second["id"], first["id"]]
    counts = [
        (b["text"], b["recipients"], b["delivered"], b["failed"], b["pending"]) for b in listed
    ]
    assert counts == [("two", 3, 0, 0, 3), ("one", 3, 1, 1, 1)]
    assert theirs == []


@pytest.mark.parametrize(
    "body",
    [{}, {"text": ""}, {"text": " \n\t "}, {"text": "x" * 2001}, {"text": 5}, {"text": None}],
)
async def test_it_refuses_a_text_that_is_missing_empty_or_too_long(
    desk: Desk, body: dict[str, Any]
) -> None:
    async with await desk.client(desk.a, "admin") as c:
        answer = await c.post("/api/v1/broadcasts", json=body)
    assert answer.status_code == 422
    async with transaction(desk.sessions) as s:
        assert (await s.scalars(select(Broadcast))).first() is None


async def test_an_observer_cannot_broadcast(desk: Desk) -> None:
    async with await desk.client(desk.a, "observer") as c:
        answer = await c.post("/api/v1/broadcasts", json={"text": TEXT})
    assert answer.status_code == 403


async def test_it_fans_out_in_a_few_statements_not_one_per_defender(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        await people(s, desk, desk.a, *[("es", "active", "telegram")] * 300)
    inserts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement.split("(")[0])

    sync_engine = desk.sessions.kw["bind"].sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        async with await desk.client(desk.a, "admin") as c:
            sent = await c.post("/api/v1/broadcasts", json={"text": TEXT})
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert sent.json()["recipients"] == 300
    assert len(await rows_of(desk, sent.json()["id"])) == 300
    assert 3 <= len(inserts) <= 6, inserts  # the broadcast, its outbox rows, recipients, audit


async def test_it_encrypts_away_from_the_event_loop_before_taking_any_lock(desk: Desk) -> None:
    """A broadcast to thousands encrypts for most of a second: meanwhile the process's event
    loop must stay free, and another transaction (a panic) must be able to write."""
    async with transaction(desk.sessions) as s:
        (person, *_) = await people(s, desk, desk.a, *[("pt", "active", "telegram")] * 3)
    loop, seen = asyncio.get_running_loop(), []

    async def panic_meanwhile() -> None:  # a write of its own, committed while encrypting
        async with transaction(desk.sessions) as s:
            await s.execute(update(Defender).where(Defender.id == person.id).values(locale="fr"))

    rows = outbox.rows

    def encrypting(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        seen.append(threading.current_thread() is threading.main_thread())
        asyncio.run_coroutine_threadsafe(panic_meanwhile(), loop).result(timeout=30)
        return rows(*args, **kwargs)

    with patch.object(outbox, "rows", encrypting):
        async with await desk.client(desk.a, "admin") as c:
            sent = await c.post("/api/v1/broadcasts", json={"text": TEXT})
    assert sent.status_code == 201, sent.text
    assert seen == [False]  # in a worker thread, not on the loop's
    assert len(await rows_of(desk, sent.json()["id"])) == 3
    async with transaction(desk.sessions) as s:
        assert (await s.get(Defender, person.id)).locale == "fr"  # type: ignore[union-attr]


async def test_retention_forgets_broadcasts_and_answers_after_30_days(desk: Desk) -> None:
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        (d,) = await people(s, desk, desk.a, ("en", "active", "telegram"))
        old = await broadcasts.send(
            s, desk.vault, org_id=desk.a.org.id, text=TEXT, actor="t", now=now - timedelta(days=31)
        )
        recent = await broadcasts.send(
            s, desk.vault, org_id=desk.a.org.id, text=TEXT, actor="t", now=now - timedelta(days=29)
        )
        closed = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.a.org.id,
            text=TEXT,
            closes_in=timedelta(minutes=5),
            actor="t",
            now=now - timedelta(days=40),
        )
        await rollcall_closing.close(
            s, desk.vault, rollcall_id=closed.id, now=now - timedelta(days=31)
        )
        still = await rollcalls.start(  # never closed (the engine was down): kept till it is
            s,
            desk.vault,
            org_id=desk.a.org.id,
            text=TEXT,
            closes_in=timedelta(minutes=5),
            actor="t",
            now=now - timedelta(days=40),
        )
    async with transaction(desk.sessions) as s:
        done = await retention.purge(s, now=now)
        left = set(await s.scalars(select(Broadcast.id)))
        recipients = set(await s.scalars(select(BroadcastRecipient.broadcast_id)))
    assert done["broadcasts"] == 2
    assert left == recipients == {recent.id, still.id}
    assert d.id is not None and old.id not in left
