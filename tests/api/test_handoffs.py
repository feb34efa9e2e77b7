"""Hand-offs of cases between desks (both backends): desk A offers a defender to desk B by its
exact name, with the defender's agreement; B accepts (the defender is B's from then on, told
in words naming no desk) or declines; A may withdraw while it waits. Never while an alert is
open; what A holds stays A's; admins only; another desk's hand-offs are not found."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core import alerts, defenders, handoffs, outbox
from core.db import transaction
from core.defenders import new_address
from core.models import (
    AlertKind,
    AuditEntry,
    Conversation,
    Defender,
    DefenderStatus,
    Evidence,
    Handoff,
    HandoffState,
    Organisation,
    OutboxMessage,
)
from tests.api.conftest import Desk, Org, make_report
from tests.api.test_dashboard import browser

AGREED = {"to_desk": "bravo", "defender_agreed": True}


async def newcomer(
    desk: Desk, org: Org, *, locale: str = "es", discreet: bool = False
) -> Defender:
    """A defender of ``org`` with no alert (the fixture's own has a panic open) and a chat."""
    person = Defender(
        id=uuid.uuid4(),
        org_id=org.org.id,
        handle=f"quiet-wren-{uuid.uuid4().hex[:6]}",
        status=DefenderStatus.active,
        locale=locale,
        discreet=discreet,
        policy_id=org.policy.id if org.policy else None,
    )
    async with transaction(desk.sessions) as s:
        s.add(person)
        await s.flush()
        chat = new_address(desk.vault, "telegram", str(uuid.uuid4().int % 10**9))
        chat.defender_id = person.id
        s.add(chat)
    return person


async def link_chat(desk: Desk, org: Org, role: str) -> None:
    """The ``role`` responder of ``org`` links a chat (desk notices reach them there)."""
    async with transaction(desk.sessions) as s:
        chat = new_address(desk.vault, "signal", f"+44{uuid.uuid4().int % 10**9}")
        chat.responder_id = org.responders[role].id
        s.add(chat)


async def desk_told(desk: Desk, org: Org, role: str) -> list[str]:
    """The hand-off notices queued for ``org``'s ``role`` responder."""
    async with desk.sessions() as s:
        rows = await s.execute(
            select(OutboxMessage).where(
                OutboxMessage.idempotency_key.like("h:%"),
                OutboxMessage.idempotency_key.contains(org.responders[role].id.hex),
            )
        )
        return sorted(outbox.payload(desk.vault, row).text for row in rows.scalars())


async def told(desk: Desk, person: Defender) -> list[tuple[str, bool]]:
    """The messages queued for ``person`` after a hand-off: (text, sensitive)."""
    async with desk.sessions() as s:
        rows = await s.execute(
            select(OutboxMessage).where(
                OutboxMessage.idempotency_key.like("h:%"), OutboxMessage.recipient == "defender"
            )
        )
        found = []
        for row in rows.scalars():
            message = outbox.payload(desk.vault, row)
            found.append((message.text, message.sensitive))
    return found


async def test_a_case_offered_and_accepted_moves_to_the_other_desk(desk: Desk) -> None:
    a, b = desk.a, desk.b
    person = await newcomer(desk, a)
    for org, role in ((a, "admin"), (b, "admin"), (b, "responder")):
        await link_chat(desk, org, role)
    async with await desk.client(a, "admin") as c:
        offered = await c.post(f"/api/v1/defenders/{person.id}/handoff", json=AGREED)
        assert offered.status_code == 201, offered.text
        body = offered.json()
        assert (body["handle"], body["from_desk"], body["to_desk"], body["state"]) == (
            person.handle,
            "alpha",
            "bravo",
            "offered",
        )
        assert (await c.get(f"/api/v1/defenders/{person.id}")).status_code == 200  # still A's
    async with await desk.client(b, "observer") as c:
        incoming = (await c.get("/api/v1/handoffs")).json()["incoming"]
        assert [h["id"] for h in incoming] == [body["id"]]
        assert (await c.get(f"/api/v1/defenders/{person.id}")).status_code == 404  # not yet
        refused = await c.post(f"/api/v1/handoffs/{body['id']}/accept")
        assert refused.status_code == 403  # an observer does not take cases
    assert await desk_told(desk, b, "admin") == [  # B's admins hear of it; no desk named
        f"Another desk offers this desk a case: {person.handle}. An admin accepts or declines "
        "it in the desk, under Hand-offs."
    ]
    assert await desk_told(desk, b, "responder") == [] and await desk_told(desk, a, "admin") == []
    async with await desk.client(b, "admin") as c:
        accepted = await c.post(f"/api/v1/handoffs/{body['id']}/accept")
        assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
        assert (await c.get(f"/api/v1/defenders/{person.id}")).status_code == 200
    assert await desk_told(desk, a, "admin") == [
        f"The other desk accepted the case of {person.handle}: it follows them now."
    ]
    async with await desk.client(a, "admin") as c:
        assert (await c.get(f"/api/v1/defenders/{person.id}")).status_code == 404
        (out,) = (await c.get("/api/v1/handoffs")).json()["outgoing"]
        assert out["state"] == "accepted" and out["decided_at"] is not None
    async with desk.sessions() as s:
        moved = await s.get(Defender, person.id)
        assert moved is not None and (moved.org_id, moved.policy_id) == (b.org.id, None)
        trail = await s.execute(
            select(AuditEntry.org_id, AuditEntry.action).where(AuditEntry.target == body["id"])
        )
        entries = sorted((str(o), act) for o, act in trail)
    assert entries == sorted(
        [
            (str(a.org.id), "handoff.offer"),
            (str(a.org.id), "handoff.accept"),
            (str(b.org.id), "handoff.accept"),
        ]
    )
    ((text, sensitive),) = await told(desk, person)  # in Spanish, naming no desk
    assert text.startswith("A partir de ahora, otro equipo de apoyo sigue") and not sensitive
    assert "alpha" not in text and "bravo" not in text
    # From now on an alert of theirs reaches desk B.
    async with transaction(desk.sessions) as s:
        moved = await s.get(Defender, person.id)
        assert moved is not None
        alert = await alerts.raise_alert(
            s, desk.vault, defender=moved, kind=AlertKind.panic, now=datetime.now(UTC)
        )
        assert alert.org_id == b.org.id


async def test_a_discreet_defender_is_told_only_that_their_group_changed(desk: Desk) -> None:
    person = await newcomer(desk, desk.a, locale="en", discreet=True)
    async with await desk.client(desk.a, "admin") as c:
        offered = (await c.post(f"/api/v1/defenders/{person.id}/handoff", json=AGREED)).json()
    async with await desk.client(desk.b, "admin") as c:
        assert (await c.post(f"/api/v1/handoffs/{offered['id']}/accept")).status_code == 200
    assert await told(desk, person) == [
        ("From now on, other people in your group follow your check-ins.", True)
    ]


async def test_what_cannot_be_offered_is_refused_with_the_reason(desk: Desk) -> None:
    a = desk.a
    assert a.defender is not None
    person = await newcomer(desk, a)
    url = f"/api/v1/defenders/{person.id}/handoff"
    async with transaction(desk.sessions) as s:  # a desk with no key pair yet
        s.add(Organisation(id=uuid.uuid4(), name="charlie"))
    async with await desk.client(a, "admin") as c:
        answers = {
            "no key": await c.post(url, json={**AGREED, "to_desk": "charlie"}),
            "not agreed": await c.post(url, json={**AGREED, "defender_agreed": False}),
            "unknown": await c.post(url, json={**AGREED, "to_desk": "brav"}),
            "own desk": await c.post(url, json={**AGREED, "to_desk": "alpha"}),
            "open alert": await c.post(f"/api/v1/defenders/{a.defender.id}/handoff", json=AGREED),
            "first": await c.post(url, json=AGREED),
            "twice": await c.post(url, json=AGREED),
            "foreign": await c.post(
                f"/api/v1/defenders/{desk.b.defender.id}/handoff",  # type: ignore[union-attr]
                json={**AGREED, "to_desk": "alpha"},
            ),
        }
    assert {k: v.status_code for k, v in answers.items()} == {
        "no key": 409,
        "not agreed": 422,
        "unknown": 422,
        "own desk": 422,
        "open alert": 409,
        "first": 201,
        "twice": 409,
        "foreign": 404,
    }
    assert answers["open alert"].json()["detail"] == (
        "this defender has an open alert: resolve it first"
    )
    assert answers["unknown"].json()["detail"] == "no other desk has exactly that name"
    assert answers["no key"].json()["detail"] == (
        "the receiving desk has no organisation key yet: the defender could not send reports"
    )
    async with await desk.client(a, "responder") as c:  # admins only
        assert (await c.post(url, json=AGREED)).status_code == 403


async def test_an_alert_opened_after_the_offer_holds_it_until_resolved(desk: Desk) -> None:
    person = await newcomer(desk, desk.a)
    async with await desk.client(desk.a, "admin") as c:
        offered = (await c.post(f"/api/v1/defenders/{person.id}/handoff", json=AGREED)).json()
    async with transaction(desk.sessions) as s:
        found = await s.get(Defender, person.id)
        assert found is not None
        alert = await alerts.raise_alert(
            s, desk.vault, defender=found, kind=AlertKind.panic, now=datetime.now(UTC)
        )
        report = make_report(desk.vault, desk.a, "CO")
        report.defender_id = person.id
        s.add(report)
    async with await desk.client(desk.b, "admin") as c:
        held = await c.post(f"/api/v1/handoffs/{offered['id']}/accept")
        assert held.status_code == 409
    async with await desk.client(desk.a, "admin") as c:
        resolved = await c.post(f"/api/v1/alerts/{alert.id}/resolve", json={"outcome": "safe"})
        assert resolved.status_code == 200
    async with await desk.client(desk.b, "admin") as c:
        assert (await c.post(f"/api/v1/handoffs/{offered['id']}/accept")).status_code == 200
    async with desk.sessions() as s:  # the alert stays with the desk that answered it
        assert (await s.get(type(alert), alert.id)).org_id == desk.a.org.id  # type: ignore[union-attr]
    async with browser(desk, desk.a, "responder") as (c, _csrf):
        for page in (
            (await c.get(f"/alerts/{alert.id}")).text,
            (await c.get(f"/reports/{report.id}")).text,
        ):
            assert person.handle in page and f'href="/defenders/{person.id}"' not in page


async def test_decline_and_withdraw_leave_the_defender_where_they_were(desk: Desk) -> None:
    a, b = desk.a, desk.b
    person = await newcomer(desk, a)
    await link_chat(desk, a, "admin")
    url = f"/api/v1/defenders/{person.id}/handoff"
    async with await desk.client(a, "admin") as ca, await desk.client(b, "admin") as cb:
        first = (await ca.post(url, json=AGREED)).json()["id"]
        assert (await ca.post(f"/api/v1/handoffs/{first}/accept")).status_code == 404  # A's own
        assert (await cb.post(f"/api/v1/handoffs/{first}/withdraw")).status_code == 404
        assert (await cb.post(f"/api/v1/handoffs/{first}/decline")).json()["state"] == "declined"
        assert await desk_told(desk, a, "admin") == [
            f"The other desk declined the case of {person.handle}: it stays with this desk."
        ]
        assert (await cb.post(f"/api/v1/handoffs/{first}/accept")).status_code == 409
        second = (await ca.post(url, json=AGREED)).json()["id"]  # offered again
        withdrawn = await ca.post(f"/api/v1/handoffs/{second}/withdraw")
        assert withdrawn.json()["state"] == "withdrawn"
        late = await cb.post(f"/api/v1/handoffs/{second}/accept")
        assert late.status_code == 409
        assert late.json()["detail"] == "this hand-off was already accepted, declined or withdrawn"
    async with desk.sessions() as s:
        stayed = await s.get(Defender, person.id)
        assert stayed is not None and stayed.org_id == a.org.id
    assert await told(desk, person) == []


async def test_deleting_the_defenders_data_withdraws_a_waiting_offer(desk: Desk) -> None:
    person = await newcomer(desk, desk.a)
    async with await desk.client(desk.a, "admin") as c:
        offered = (await c.post(f"/api/v1/defenders/{person.id}/handoff", json=AGREED)).json()
    async with transaction(desk.sessions) as s:
        found = await s.get(Defender, person.id)
        assert found is not None
        await defenders.delete_data(s, defender=found)
    async with desk.sessions() as s:
        handoff = await s.get(Handoff, uuid.UUID(offered["id"]))
        assert handoff is not None and handoff.state is HandoffState.withdrawn
    async with await desk.client(desk.b, "admin") as c:
        assert (await c.post(f"/api/v1/handoffs/{offered['id']}/accept")).status_code == 409


async def test_the_dashboard_offers_accepts_and_shows_it_in_both_audit_logs(desk: Desk) -> None:
    a, b = desk.a, desk.b
    person = await newcomer(desk, a)
    page = f"/defenders/{person.id}"
    async with browser(desk, a, "admin") as (c, csrf), browser(desk, b, "admin") as (cb, csrf_b):
        form = (await c.get(page)).text
        assert 'action="/defenders/' in form and 'name="to_desk"' in form
        missing = await c.post(f"{page}/handoff", data={"csrf": csrf, "to_desk": "bravo"})
        assert missing.headers["location"] == f"{page}?notice=handoff_not_agreed"
        shown = (await c.get(missing.headers["location"])).text
        assert "confirm that the defender agreed to be handed to that desk" in shown
        sent = await c.post(
            f"{page}/handoff", data={"csrf": csrf, "to_desk": " bravo ", "agreed": "yes"}
        )
        assert sent.headers["location"] == f"{page}?notice=handoff_offered"
        waiting = (await c.get(page)).text
        assert "Offered to bravo on" in waiting and ">Withdraw the offer</button>" in waiting
        assert 'name="to_desk"' not in waiting  # one offer at a time
        listed = (await cb.get("/handoffs")).text
        assert person.handle in listed and ">Accept the case</button>" in listed
        (handoff_id,) = [h.id for h in await _handoffs(desk)]
        took = await cb.post(f"/handoffs/{handoff_id}/accept", data={"csrf": csrf_b})
        assert took.headers["location"] == "/handoffs?notice=handoff_accept"
        after = (await cb.get(took.headers["location"])).text
        assert "The defender is now followed by this desk." in after
        assert f'<a href="/defenders/{person.id}">{person.handle}</a>' in after
        assert (await cb.get(page)).status_code == 200
        trail_b = (await cb.get("/audit")).text
        assert (await c.get(page)).status_code == 404
        trail_a = (await c.get("/audit")).text
    assert "Offered a case to another desk" in trail_a and f"{person.handle} · bravo" in trail_a
    assert "Accepted a case from another desk" in trail_b
    assert f"{person.handle} · alpha" in trail_b


async def test_the_hand_offs_page_in_arabic(desk: Desk) -> None:
    person = await newcomer(desk, desk.a)
    async with await desk.client(desk.a, "admin") as c:
        await c.post(f"/api/v1/defenders/{person.id}/handoff", json=AGREED)
    async with browser(desk, desk.b, "observer") as (c, _csrf):
        answer = await c.get("/handoffs", headers={"accept-language": "ar"})
    page = answer.text
    assert answer.status_code == 200 and 'dir="rtl"' in page
    assert "بانتظار الرد" in page and person.handle in page
    assert "<form" not in page.split("<main", 1)[1].split("</main>")[0]  # an observer: no forms


async def _handoffs(desk: Desk) -> list[Handoff]:
    async with desk.sessions() as s:
        return list((await s.execute(select(Handoff))).scalars())


async def test_a_report_being_written_holds_the_hand_off_until_it_is_sent(desk: Desk) -> None:
    """Its parts and files are sealed to the first desk's key as they come: handed on midway,
    the report would reach a desk that cannot open them."""
    person = await newcomer(desk, desk.a)
    now = datetime.now(UTC)
    url = f"/api/v1/defenders/{person.id}/handoff"
    talk = Conversation(
        id=uuid.uuid4(),
        defender_id=person.id,
        flow="report",
        state="narrative",
        expires_at=now + timedelta(hours=1),
    )
    async with transaction(desk.sessions) as s:
        s.add(talk)
    async with await desk.client(desk.a, "admin") as c:
        held = await c.post(url, json=AGREED)
        assert held.status_code == 409 and held.json()["detail"] == (
            "this defender is writing a report: the case can be handed on once it is sent"
        )
        async with transaction(desk.sessions) as s:  # set aside for a check-in: still held
            found = await s.get(Conversation, talk.id)
            assert found is not None
            found.flow, found.state = "checkin", "pin"
            found.put(desk.vault, "data_enc", json.dumps({"_resume": {"flow": "report"}}))
        assert (await c.post(url, json=AGREED)).status_code == 409
        async with transaction(desk.sessions) as s:  # the draft lapsed
            found = await s.get(Conversation, talk.id)
            assert found is not None
            found.expires_at = now - timedelta(minutes=1)
        offered = await c.post(url, json=AGREED)
        assert offered.status_code == 201
    async with transaction(desk.sessions) as s:  # a file sent for a report not sent yet
        s.add(
            Evidence(
                id=uuid.uuid4(),
                org_id=desk.a.org.id,
                defender_id=person.id,
                report_id=uuid.uuid4(),
                sealed=b"sealed to alpha",
            )
        )
    async with await desk.client(desk.b, "admin") as c:
        assert (await c.post(f"/api/v1/handoffs/{offered.json()['id']}/accept")).status_code == 409


def test_it_knows_a_report_being_written_by_the_flows_own_names() -> None:
    from flows import report, router_states

    assert (handoffs.REPORT_FLOW, handoffs.SET_ASIDE) == (report.NAME, router_states.RESUME)


async def test_a_responder_who_is_not_an_admin_cannot_offer_nor_answer_from_the_dashboard(
    desk: Desk,
) -> None:
    person = await newcomer(desk, desk.a)
    page = f"/defenders/{person.id}"
    async with browser(desk, desk.a, "responder") as (c, csrf):
        assert 'name="to_desk"' not in (await c.get(page)).text  # no form offered
        sent = await c.post(
            f"{page}/handoff", data={"csrf": csrf, "to_desk": "bravo", "agreed": "yes"}
        )
        assert sent.headers["location"] == f"{page}?notice=forbidden"
        answer = await c.post(f"/handoffs/{uuid.uuid4()}/accept", data={"csrf": csrf})
        assert answer.headers["location"] == "/handoffs?notice=forbidden"
    assert await _handoffs(desk) == []
