"""The dashboard's broadcasts and roll-calls over HTTP (both backends): who sees and who sends,
CSRF, tenancy, the outbox rows and audit entries the API's own handlers write, closing early."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from core import rollcalls
from core.db import transaction
from core.models import AuditEntry, Broadcast, OutboxMessage
from tests.api.conftest import Desk
from tests.api.test_broadcasts import people
from tests.api.test_dashboard import browser

TEXT = "Raid last night. Everyone check in now."
STARTED = re.compile(r"^/rollcalls/([0-9a-f-]{36})\?notice=started$")


async def actions(desk: Desk) -> list[tuple[str, str | None, str | None]]:
    """The broadcast and roll-call entries not written by the tests' own set-up."""
    kinds = ("broadcast.send", "rollcall.start", "rollcall.close")
    async with desk.sessions() as s:
        rows = await s.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.target)
            .where(AuditEntry.action.in_(kinds), AuditEntry.actor != "test")
            .order_by(AuditEntry.seq)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def queued(desk: Desk, broadcast_id: uuid.UUID) -> int:
    async with desk.sessions() as s:
        n = await s.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.idempotency_key.startswith(f"b:{broadcast_id.hex}:"))
        )
        return int(n or 0)


async def broadcasts_in_db(desk: Desk) -> list[Broadcast]:
    async with desk.sessions() as s:
        return list((await s.scalars(select(Broadcast))).all())


async def test_an_observer_sees_them_but_cannot_send_start_or_close(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        await people(s, desk, desk.a, ("en", "active", "telegram"))
        mine = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.a.org.id,
            text=TEXT,
            closes_in=timedelta(minutes=30),
            actor="test",
            now=datetime.now(UTC),
        )
    async with browser(desk, desk.a, "observer") as (c, csrf):
        page = await c.get("/broadcasts")
        assert page.status_code == 200 and 'href="/broadcasts"' in page.text
        assert f'data-rollcall="{mine.id}" data-open="yes"' in page.text and TEXT in page.text
        assert 'action="/broadcasts"' not in page.text and 'action="/rollcalls"' not in page.text
        detail = await c.get(f"/rollcalls/{mine.id}")
        assert detail.status_code == 200 and "/close" not in detail.text
        for path, data in (
            ("/broadcasts", {"text": "hello"}),
            ("/rollcalls", {"text": "check in", "minutes": "30"}),
        ):
            answer = await c.post(path, data={"csrf": csrf, **data})
            assert answer.status_code == 303
            assert answer.headers["location"] == "/broadcasts?notice=forbidden"
        answer = await c.post(f"/rollcalls/{mine.id}/close", data={"csrf": csrf})
        assert answer.headers["location"] == f"/rollcalls/{mine.id}?notice=forbidden"
        shown = await c.get(answer.headers["location"])
        assert "Your role does not allow this." in shown.text
    assert [b.id for b in await broadcasts_in_db(desk)] == [mine.id]
    assert (await broadcasts_in_db(desk))[0].closed_at is None
    assert await actions(desk) == []


async def test_a_responder_sends_a_broadcast_that_queues_a_message_each(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        await people(s, desk, desk.a, ("es", "active", "telegram"), ("fr", "paused", "signal"))
        await people(s, desk, desk.b, ("en", "active", "telegram"))
    who = desk.a.responders["responder"]
    async with browser(desk, desk.a, "responder") as (c, csrf):
        for forged in ("", "x" * 43):
            answer = await c.post("/broadcasts", data={"csrf": forged, "text": TEXT})
            assert answer.headers["location"] == "/login"
        assert await broadcasts_in_db(desk) == []

        for bad in ("", "   ", "x" * 2001):  # refused with the text kept in the form
            refused = await c.post("/broadcasts", data={"csrf": csrf, "text": bad})
            assert refused.status_code == 400
            assert "Write the message to send: up to 2000 characters." in refused.text
        assert await broadcasts_in_db(desk) == []

        asked = await c.post("/broadcasts", data={"csrf": csrf, "text": TEXT})
        assert asked.status_code == 200 and "Send this broadcast?" in asked.text
        assert "It goes to 2 defenders now" in asked.text  # desk.a's two, never desk.b's
        assert await broadcasts_in_db(desk) == []  # asked once more: nothing sent yet
        answer = await c.post("/broadcasts", data={"csrf": csrf, "text": TEXT, "step": "send"})
        assert answer.headers["location"] == "/broadcasts?notice=sent"
        page = await c.get(answer.headers["location"])
    (sent,) = await broadcasts_in_db(desk)
    assert (sent.org_id, sent.closes_at, sent.recipients) == (desk.a.org.id, None, 2)
    assert await queued(desk, sent.id) == 2
    assert "The broadcast is queued for every enrolled defender." in page.text
    assert f'data-broadcast="{sent.id}"' in page.text and TEXT in page.text
    assert "responder-alpha" in page.text  # who sent it, by username
    assert await actions(desk) == [("broadcast.send", f"responder:{who.id}", str(sent.id))]
    async with browser(desk, desk.b, "responder") as (c, _csrf):
        theirs = await c.get("/broadcasts")
    assert str(sent.id) not in theirs.text and TEXT not in theirs.text


async def test_a_responder_starts_a_rollcall_sees_the_answers_and_closes_it(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        safe, quiet = await people(
            s, desk, desk.a, ("en", "active", "telegram"), ("pt", "active", "signal")
        )
    who = desk.a.responders["responder"]
    async with browser(desk, desk.a, "responder") as (c, csrf):
        for minutes in ("0", "1441", "soon", ""):
            data = {"csrf": csrf, "text": TEXT, "minutes": minutes}
            refused = await c.post("/rollcalls", data=data)
            assert refused.status_code == 400 and "1 to 1440 minutes" in refused.text
            assert TEXT in refused.text  # the message is not lost
        assert await broadcasts_in_db(desk) == []

        data = {"csrf": csrf, "text": TEXT, "minutes": "45"}
        asked = await c.post("/rollcalls", data=data)
        assert "Start this roll-call?" in asked.text and "for 45 minutes" in asked.text
        assert await broadcasts_in_db(desk) == []
        answer = await c.post("/rollcalls", data={**data, "step": "send"})
        started = STARTED.match(answer.headers["location"])
        assert started is not None
        rid = uuid.UUID(started.group(1))
        assert await queued(desk, rid) == 2
        async with transaction(desk.sessions) as s:
            done = await rollcalls.answer(
                s, rollcall_id=rid, defender_id=safe.id, said="safe", now=datetime.now(UTC)
            )
        assert done.outcome is rollcalls.Outcome.recorded

        page = await c.get(f"/rollcalls/{rid}")
        assert "The roll-call is sent to every enrolled defender." not in page.text
        page = await c.get(answer.headers["location"])
        assert "The roll-call is sent to every enrolled defender." in page.text
        assert f'data-defender="{safe.handle}" data-answer="safe"' in page.text
        assert f'data-defender="{quiet.handle}" data-answer="none"' in page.text
        # Each handle leads to the defender's page (their alerts, their check-ins).
        for person in (safe, quiet):
            assert f'<a class="defender" href="/defenders/{person.id}">{person.handle}</a>' in (
                page.text
            )
        assert 'class="unanswered">1<' in page.text and 'class="safe">1<' in page.text
        assert f'action="/rollcalls/{rid}/close"' in page.text

        for forged in ("", "x" * 43):
            refused = await c.post(f"/rollcalls/{rid}/close", data={"csrf": forged})
            assert refused.headers["location"] == "/login"
        closed = await c.post(f"/rollcalls/{rid}/close", data={"csrf": csrf})
        assert closed.headers["location"] == f"/rollcalls/{rid}?notice=closed"
        page = await c.get(closed.headers["location"])
        assert "You closed the roll-call" in page.text and "/close" not in page.text
        again = await c.post(f"/rollcalls/{rid}/close", data={"csrf": csrf})
        assert again.headers["location"] == f"/rollcalls/{rid}?notice=not_open"
        listed = await c.get("/broadcasts")
        assert f'data-rollcall="{rid}" data-open="no"' in listed.text
    (row,) = await broadcasts_in_db(desk)
    assert row.closed_at is not None and row.closes_at is not None
    actor = f"responder:{who.id}"
    assert await actions(desk) == [
        ("rollcall.start", actor, str(rid)),
        ("rollcall.close", actor, str(rid)),
    ]


async def test_another_organisations_rollcall_is_not_found(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        theirs = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.b.org.id,
            text=TEXT,
            closes_in=timedelta(minutes=30),
            actor="test",
            now=datetime.now(UTC),
        )
    async with browser(desk, desk.a, "admin") as (c, csrf):
        for rid in (theirs.id, uuid.uuid4()):
            shown = await c.get(f"/rollcalls/{rid}")
            assert shown.status_code == 404 and TEXT not in shown.text
            closing = await c.post(f"/rollcalls/{rid}/close", data={"csrf": csrf})
            assert closing.status_code == 404
        listed = await c.get("/broadcasts")
        assert str(theirs.id) not in listed.text and TEXT not in listed.text
    (row,) = await broadcasts_in_db(desk)
    assert row.closed_at is None
    assert await actions(desk) == []


async def test_a_stranger_is_sent_to_the_login_page(desk: Desk) -> None:
    async with desk.anonymous() as c:
        for path in ("/broadcasts", f"/rollcalls/{uuid.uuid4()}"):
            answer = await c.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/login"
        answer = await c.post("/broadcasts", data={"csrf": "x", "text": TEXT})
        assert answer.headers["location"] == "/login"
    assert await broadcasts_in_db(desk) == []


async def test_the_page_reads_in_arabic_right_to_left(desk: Desk) -> None:
    async with browser(desk, desk.a, "responder") as (c, _csrf):
        c.headers["accept-language"] = "ar"
        page = await c.get("/broadcasts")
    assert page.status_code == 200 and 'dir="rtl"' in page.text
    assert "Broadcasts and roll-calls" not in page.text and "Start the roll-call" not in page.text


async def test_sending_is_asked_once_more_and_the_way_back_keeps_the_message(desk: Desk) -> None:
    """A broadcast or a roll-call cannot be taken back from the defenders' phones: one click
    on the form only shows how many it reaches and the message, and "Change the message"
    brings the form back filled in."""
    async with transaction(desk.sessions) as s:
        await people(s, desk, desk.a, ("en", "active", "telegram"))
    async with browser(desk, desk.a, "responder") as (c, csrf):
        for path, more in (("/broadcasts", {}), ("/rollcalls", {"minutes": "30"})):
            data = {"csrf": csrf, "text": TEXT, **more}
            asked = await c.post(path, data=data)
            assert "It goes to 1 defender now, and cannot be taken back" in asked.text
            assert 'name="step" value="send"' in asked.text and TEXT in asked.text
            back = await c.post(path, data={**data, "step": "edit"})
            assert back.status_code == 200 and f">{TEXT}</textarea>" in back.text
    assert await broadcasts_in_db(desk) == []
