"""Responder actions land in the hash chain; admins list their own and verify the chain."""

from __future__ import annotations

from sqlalchemy import update

from core.db import transaction
from core.models import AuditEntry
from tests.api.conftest import Desk


async def test_it_records_actions_and_lists_only_the_own_organisation(desk: Desk) -> None:
    assert desk.a.alert is not None and desk.b.alert is not None
    async with await desk.client(desk.b, "responder") as c:
        await c.post(f"/api/v1/alerts/{desk.b.alert.id}/acknowledge")
    async with await desk.client(desk.a, "admin") as c:
        await c.get(f"/api/v1/alerts/{desk.a.alert.id}")
        await c.post(f"/api/v1/alerts/{desk.a.alert.id}/acknowledge")
        await c.patch(
            f"/api/v1/responders/{desk.a.responders['observer'].id}", json={"role": "responder"}
        )
        entries = (await c.get("/api/v1/audit", params={"limit": 2})).json()
        rest = (await c.get("/api/v1/audit", params={"before_seq": entries["next_cursor"]})).json()
        verdict = (await c.get("/api/v1/audit/verify")).json()
    actions = [e["action"] for e in entries["items"] + rest["items"]]
    assert actions[:3] == ["responder.role", "alert.acknowledge", "alert.view"]
    assert "org.create" in actions
    assert all(desk.b.alert.id.hex not in str(e) for e in entries["items"] + rest["items"])
    assert verdict == {"ok": True, "first_bad_seq": None}


async def test_it_names_the_first_altered_entry(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        await s.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(action="edited"))
    async with await desk.client(desk.a, "admin") as c:
        verdict = (await c.get("/api/v1/audit/verify")).json()
    assert verdict == {"ok": False, "first_bad_seq": 2}
