"""The alert queue, timelines, acknowledge / assign / note / resolve / reopen, by dedup key."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from core import alerts, desk_alerts
from core.crypto import open_sealed, unprotect_private_key
from core.db import transaction
from core.models import (
    Alert,
    AlertEvent,
    AlertKind,
    AuditEntry,
    Defender,
    Organisation,
    OutboxMessage,
)
from tests.api.conftest import PASSPHRASE, Desk, make_alert


async def test_it_pages_the_queue_newest_first_with_filters(desk: Desk) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with transaction(desk.sessions) as s:
        for i in range(7):
            await make_alert(
                s, desk.a, AlertKind.missed_checkin, start + timedelta(minutes=i), resolved=True
            )
    seen: list[str] = []
    async with await desk.client(desk.a, "observer") as c:
        cursor = None
        while True:
            params = {"limit": 3, "state": "resolved"} | ({"cursor": cursor} if cursor else {})
            page = (await c.get("/api/v1/alerts", params=params)).json()
            seen += [a["triggered_at"] for a in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        panics = (await c.get("/api/v1/alerts", params={"kind": "panic"})).json()["items"]
        p1 = (await c.get("/api/v1/alerts", params={"priority": 1})).json()["items"]
        bad = await c.get("/api/v1/alerts", params={"cursor": "not-a-cursor"})
    assert len(seen) == 7 and seen == sorted(seen, reverse=True)
    assert [a["id"] for a in panics] == [str(desk.a.alert.id)]  # type: ignore[union-attr]
    assert panics[0]["defender_handle"] == "calm-heron-alpha"
    assert len(p1) == 7 and bad.status_code == 422


async def test_it_works_an_alert_from_acknowledge_to_reopen(desk: Desk) -> None:
    alert = desk.a.alert
    assert alert is not None
    me = desk.a.responders["responder"]
    path = f"/api/v1/alerts/{alert.id}"
    async with await desk.client(desk.a, "responder") as c:
        ack = (await c.post(f"{path}/acknowledge")).json()
        assigned = (await c.post(f"{path}/assign", json={"responder_id": str(me.id)})).json()
        note = await c.post(f"{path}/notes", json={"text": "her sister says she is home"})
        resolved = (await c.post(f"{path}/resolve", json={"outcome": "safe"})).json()
        again = await c.post(f"{path}/resolve", json={"outcome": "safe"})
        bad = await c.post(f"{path}/resolve", json={"outcome": "fine"})
        reopened = (await c.post(f"{path}/reopen")).json()
        detail = (await c.get(path)).json()
    assert (ack["state"], ack["acknowledged_by"]) == ("acknowledged", str(me.id))
    assert assigned["assigned_to"] == str(me.id) and note.status_code == 201
    assert (resolved["state"], resolved["outcome"]) == ("resolved", "safe")
    assert (again.status_code, bad.status_code) == (409, 422)
    assert (reopened["state"], reopened["outcome"]) == ("triggered", None)
    kinds = [e["kind"] for e in detail["timeline"]]
    for kind in ("acknowledged", "assigned", "note_added", "resolved", "reopened"):
        assert kind in kinds
    assert "her sister" not in str(detail["timeline"])
    # The note is sealed: only the organisation key (opened with its passphrase) reads it.
    assert desk.a.org.protected_private_key is not None
    private = unprotect_private_key(desk.a.org.protected_private_key, PASSPHRASE)
    sealed = detail["notes"][0]
    text = open_sealed(
        private,
        base64.b64decode(sealed["sealed"]),
        org_id=desk.a.org.id,
        record_id=uuid.UUID(sealed["id"]),
        kind="alert_note",
    )
    assert text == {"alert": str(alert.id), "text": "her sister says she is home"}


async def test_it_lets_an_external_desk_act_by_dedup_key(desk: Desk) -> None:
    alert = desk.a.alert
    assert alert is not None
    async with await desk.client(desk.a, "token") as c:
        ack = await c.post(f"/api/v1/alerts/by-dedup/{alert.dedup_key}/acknowledge")
        done = await c.post(
            f"/api/v1/alerts/by-dedup/{alert.dedup_key}/resolve", json={"outcome": "intervention"}
        )
        unknown = await c.post("/api/v1/alerts/by-dedup/nope/acknowledge")
        detail = (await c.get(f"/api/v1/alerts/{alert.id}")).json()
    assert ack.json()["state"] == "acknowledged" and ack.json()["acknowledged_by"] is None
    assert done.json()["outcome"] == "intervention" and unknown.status_code == 404
    actors = {e["actor"] for e in detail["timeline"]}
    assert any(a and a.startswith("token:") for a in actors) or "api" in actors


async def test_a_late_retry_about_an_earlier_alert_leaves_the_next_one_open(desk: Desk) -> None:
    """The external desk resolved alert 1, its client retries later; meanwhile the defender
    raised the same kind of alert again. The retry must not close the new one."""
    assert desk.a.defender is not None
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        person = await s.get(Defender, desk.a.defender.id)
        assert person is not None
        first = await alerts.raise_alert(
            s, desk.vault, defender=person, kind=AlertKind.duress, now=now
        )
    base = f"/api/v1/alerts/by-dedup/{first.dedup_key}"
    async with await desk.client(desk.a, "token") as c:
        ack = await c.post(f"{base}/acknowledge")
        done = await c.post(f"{base}/resolve", json={"outcome": "safe"})
        async with transaction(desk.sessions) as s:
            person = await s.get(Defender, desk.a.defender.id)
            assert person is not None
            second = await alerts.raise_alert(
                s, desk.vault, defender=person, kind=AlertKind.duress, now=now
            )
        late_ack = await c.post(f"{base}/acknowledge")
        late_resolve = await c.post(f"{base}/resolve", json={"outcome": "safe"})
        fresh = (await c.get(f"/api/v1/alerts/{second.id}")).json()
        own = await c.post(f"/api/v1/alerts/by-dedup/{second.dedup_key}/acknowledge")
    assert (ack.status_code, done.status_code) == (200, 200) and second.id != first.id
    assert (late_ack.status_code, late_resolve.status_code) == (409, 409)
    assert fresh["state"] == "triggered" and own.json()["state"] == "acknowledged"


async def test_a_late_retry_about_an_alert_before_it_was_reopened_closes_nothing(
    desk: Desk,
) -> None:
    """The external desk resolved the alert, a responder reopened it, then the desk's client
    retried its resolve: the retry (or an acknowledge) by the key the alert had before answers
    409 and leaves it open (no false "safe"); the desk's resolve by the new key, which the
    reopened alert's events carry, closes it."""
    alert = desk.a.alert
    assert alert is not None and desk.a.webhook is not None
    async with transaction(desk.sessions) as s:  # the desk step was taken: events go out
        row = await s.get(Alert, alert.id)
        assert row is not None
        row.step = 1
    old = alert.dedup_key
    async with (
        await desk.client(desk.a, "token") as ext,
        await desk.client(desk.a, "responder") as r,
    ):
        first = await ext.post(f"/api/v1/alerts/by-dedup/{old}/resolve", json={"outcome": "safe"})
        reopened = await r.post(f"/api/v1/alerts/{alert.id}/reopen")
        new = reopened.json()["dedup_key"]
        late = await ext.post(f"/api/v1/alerts/by-dedup/{old}/resolve", json={"outcome": "safe"})
        late_ack = await ext.post(f"/api/v1/alerts/by-dedup/{old}/acknowledge")
        still = (await r.get(f"/api/v1/alerts/{alert.id}")).json()
        fresh = await ext.post(f"/api/v1/alerts/by-dedup/{new}/resolve", json={"outcome": "other"})
        again = await r.post(f"/api/v1/alerts/{alert.id}/reopen")
        newer = again.json()["dedup_key"]
        stale = [
            await ext.post(f"/api/v1/alerts/by-dedup/{key}/resolve", json={"outcome": "safe"})
            for key in (old, new)
        ]
        unknown = await ext.post(f"/api/v1/alerts/by-dedup/{newer}.1/acknowledge")
        ack = await ext.post(f"/api/v1/alerts/by-dedup/{newer}/acknowledge")
    assert (first.status_code, reopened.status_code) == (200, 200)
    assert (late.status_code, late_ack.status_code) == (409, 409)
    assert still["state"] == "triggered" and still["outcome"] is None and new != old
    assert fresh.status_code == 200 and fresh.json()["outcome"] == "other"
    assert newer not in (old, new) and [a.status_code for a in stale] == [409, 409]
    assert unknown.status_code == 404 and ack.json()["state"] == "acknowledged"
    async with desk.sessions() as s:  # the resolved event told the desk the key it used
        rows = await s.scalars(select(OutboxMessage).where(OutboxMessage.alert_id == alert.id))
        told = [json.loads(m.get(desk.vault, "payload_enc") or b"{}") for m in rows]
    resolved = [b["dedup_key"] for b in told if b.get("type") == "alert.resolved"]
    assert sorted(resolved) == sorted([old, new])


async def test_it_refuses_to_reopen_over_another_open_alert(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        old = await make_alert(
            s, desk.a, AlertKind.panic, datetime(2025, 1, 1, tzinfo=UTC), resolved=True
        )
    async with await desk.client(desk.a, "admin") as c:
        answer = await c.post(f"/api/v1/alerts/{old.id}/reopen")
    assert answer.status_code == 409


async def test_acknowledging_ten_times_at_once_is_one_acknowledgement(desk: Desk) -> None:
    alert = desk.a.alert
    assert alert is not None
    async with transaction(desk.sessions) as s:  # the desk step was taken: acks emit webhooks
        row = await s.get(Alert, alert.id)
        assert row is not None
        row.step = 1
    async with await desk.client(desk.a, "token") as c:
        answers = await asyncio.gather(
            *(c.post(f"/api/v1/alerts/by-dedup/{alert.dedup_key}/acknowledge") for _ in range(10))
        )
    assert {a.status_code for a in answers} == {200}
    async with desk.sessions() as s:
        events = select(func.count()).where(
            AlertEvent.alert_id == alert.id, AlertEvent.kind == "acknowledged"
        )
        audited = select(func.count()).where(
            AuditEntry.action == "alert.acknowledge", AuditEntry.target == str(alert.id)
        )
        assert (await s.scalar(events), await s.scalar(audited)) == (1, 1)


async def test_an_external_desk_can_keep_an_alert_open_for_proof_of_life(desk: Desk) -> None:
    """The role matrix grants keep-open to API tokens (an external desk system), but a token
    always got 409 "the alert is not open": only a responder could. It is recorded as the
    token's act, as in the audit log."""
    assert desk.a.alert is not None
    async with await desk.client(desk.a, "token") as c:
        kept = await c.post(f"/api/v1/alerts/{desk.a.alert.id}/keep-open")
    assert kept.status_code == 200, kept.text
    async with desk.sessions() as s:
        alert = await s.get(Alert, desk.a.alert.id)
        assert alert is not None and alert.keep_open
        actors = (
            await s.execute(
                select(AlertEvent.actor).where(
                    AlertEvent.alert_id == alert.id, AlertEvent.kind == "kept_open"
                )
            )
        ).scalars()
        assert [a.split(":")[0] for a in actors] == ["token"]


async def test_a_client_tells_a_note_the_defender_wrote(desk: Desk) -> None:
    """A note the defender wrote during the alert (flows.panic.told) has no author, as one an
    API token added: the timeline's note_added event for it says "defender" (its actor)."""
    alert = desk.a.alert
    assert alert is not None
    async with transaction(desk.sessions) as s:
        row, org = await s.get(Alert, alert.id), await s.get(Organisation, desk.a.org.id)
        assert row is not None and org is not None
        mine = await desk_alerts.add_note(
            s,
            desk.vault,
            alert=row,
            org=org,
            text="at the market",
            author_id=None,
            actor="defender",
            now=datetime.now(UTC),
        )
    async with await desk.client(desk.a, "token") as c:
        await c.post(f"/api/v1/alerts/{alert.id}/notes", json={"text": "from the case system"})
        detail = (await c.get(f"/api/v1/alerts/{alert.id}")).json()
    assert [n["author_id"] for n in detail["notes"]] == [None, None]  # as before
    added = {
        e["detail"]["note"]: e["actor"] for e in detail["timeline"] if e["kind"] == "note_added"
    }
    assert added[str(mine.id)] == "defender"
    (other,) = (n["id"] for n in detail["notes"] if n["id"] != str(mine.id))
    assert added[other].startswith("token:")


async def test_a_refused_value_says_what_the_field_accepts(desk: Desk) -> None:
    """Found walking the API as an integrator: resolving with an outcome the API does not
    know answered 422 "the request is not valid", type "literal_error", and nothing said which
    outcomes exist. The answer names what the schema accepts (never what was sent)."""
    assert desk.a.alert is not None
    key = desk.a.alert.dedup_key
    async with await desk.client(desk.a, "token") as c:
        outcome = await c.post(
            f"/api/v1/alerts/by-dedup/{key}/resolve", json={"outcome": "SECRET-CANARY"}
        )
        state = await c.get("/api/v1/alerts", params={"state": "closed"})
        limit = await c.get("/api/v1/alerts", params={"limit": 1000})
        missing = await c.post(f"/api/v1/alerts/by-dedup/{key}/resolve", json={})
    assert outcome.status_code == 422 and "SECRET-CANARY" not in outcome.text
    [told] = outcome.json()["detail"]
    assert told["loc"] == ["body", "outcome"] and told["type"] == "literal_error"
    assert told["ctx"] == {"expected": "'safe', 'false_alarm', 'intervention' or 'other'"}
    [told] = state.json()["detail"]
    assert told["ctx"] == {"expected": "'triggered', 'acknowledged' or 'resolved'"}
    assert limit.json()["detail"][0]["ctx"] == {"le": 200}
    assert "ctx" not in missing.json()["detail"][0]  # a missing field: nothing to add


async def test_the_timeline_names_the_token_that_acknowledged(desk: Desk) -> None:
    """Found walking the API as an integrator: an alert acknowledged by an API token showed
    the actor "api" on its timeline (the dashboard showed "api", untranslated), while its
    resolve and notes showed "token:<id>" as documented: with two integrations, nobody could
    tell which acknowledged it."""
    alert = desk.a.alert
    assert alert is not None
    async with await desk.client(desk.a, "token") as c:
        await c.post(f"/api/v1/alerts/by-dedup/{alert.dedup_key}/acknowledge")
        await c.post(f"/api/v1/alerts/{alert.id}/resolve", json={"outcome": "safe"})
        detail = (await c.get(f"/api/v1/alerts/{alert.id}")).json()
    actors = {e["kind"]: e["actor"] for e in detail["timeline"]}
    assert actors["resolved"].startswith("token:")
    assert actors["acknowledged"] == actors["resolved"]
