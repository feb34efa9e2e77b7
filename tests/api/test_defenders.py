"""Defenders by handle with check-in health; pause and resume; policies; invite codes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from core import defenders
from core.db import transaction
from core.models import (
    Alert,
    AlertState,
    AuditEntry,
    CheckIn,
    CheckInKind,
    CheckInState,
    Defender,
    InviteCode,
)
from tests.api.conftest import Desk, undeletable


async def test_it_lists_handles_and_health_never_names(desk: Desk) -> None:
    assert desk.a.defender is not None
    async with await desk.client(desk.a, "observer") as c:
        page = (await c.get("/api/v1/defenders")).json()
    (item,) = page["items"]
    assert item["handle"] == "calm-heron-alpha" and item["health"] == "alert"
    assert set(item) == {
        "id",
        "handle",
        "status",
        "last_checkin_at",
        "health",
        "next_due_at",
        "policy_id",
        "messages_not_deleted",
    }
    assert item["messages_not_deleted"] == 0


async def test_one_defender_by_id_is_the_list_item_and_the_view_is_audited(desk: Desk) -> None:
    assert desk.a.defender is not None and desk.b.defender is not None
    async with await desk.client(desk.a, "observer") as c:
        (listed,) = (await c.get("/api/v1/defenders")).json()["items"]
        one = await c.get(f"/api/v1/defenders/{desk.a.defender.id}")
        foreign = await c.get(f"/api/v1/defenders/{desk.b.defender.id}")
    assert one.status_code == 200 and one.json() == listed
    assert foreign.status_code == 404 and desk.b.defender.handle not in foreign.text
    async with desk.sessions() as s:
        viewed = await s.execute(select(AuditEntry).where(AuditEntry.action == "defender.view"))
        assert [e.target for e in viewed.scalars()] == [str(desk.a.defender.id)]


async def test_it_counts_the_messages_discreet_mode_could_not_delete(desk: Desk) -> None:
    """R12's alarm reaches the desk also when no alert of the defender's is open: the list
    says how many messages are still on their phone (their alert is resolved here)."""
    assert desk.a.defender is not None and desk.b.defender is not None
    async with transaction(desk.sessions) as s:
        await s.execute(update(Alert).values(state=AlertState.resolved))
    await undeletable(desk, desk.a.defender.id, 3)
    await undeletable(desk, desk.b.defender.id, 5)  # another organisation's
    async with await desk.client(desk.a, "observer") as c:
        (item,) = (await c.get("/api/v1/defenders")).json()["items"]
    assert (item["health"], item["messages_not_deleted"]) == ("no_checkin", 3)
    async with await desk.client(desk.a, "responder") as c:
        paused = (await c.post(f"/api/v1/defenders/{desk.a.defender.id}/pause")).json()
    assert (paused["health"], paused["messages_not_deleted"]) == ("paused", 3)


async def test_it_pauses_and_resumes_check_ins(desk: Desk) -> None:
    defender = desk.a.defender
    assert defender is not None
    due = datetime.now(UTC) + timedelta(hours=2)
    async with transaction(desk.sessions) as s:
        checkin = CheckIn(
            id=uuid.uuid4(),
            defender_id=defender.id,
            kind=CheckInKind.timer,
            due_at=due,
            next_action_at=due,
        )
        s.add(checkin)
    path = f"/api/v1/defenders/{defender.id}"
    async with await desk.client(desk.a, "responder") as c:
        paused = await c.post(f"{path}/pause")
        twice = await c.post(f"{path}/pause")
        async with desk.sessions() as s:
            state = (await s.get(CheckIn, checkin.id)).state  # type: ignore[union-attr]
        resumed = await c.post(f"{path}/resume")
    assert (paused.json()["status"], paused.json()["health"]) == ("paused", "paused")
    assert twice.status_code == 409 and state is CheckInState.paused
    assert resumed.json()["status"] == "active"
    async with desk.sessions() as s:
        assert (await s.get(CheckIn, checkin.id)).state is CheckInState.armed  # type: ignore[union-attr]


async def test_it_restores_a_defender_hidden_after_a_forced_deletion(desk: Desk) -> None:
    defender = desk.a.defender
    assert defender is not None
    path = f"/api/v1/defenders/{defender.id}"
    async with await desk.client(desk.a, "responder") as c:
        active = await c.post(f"{path}/restore")
        async with transaction(desk.sessions) as s:
            row = await s.get(Defender, defender.id)
            assert row is not None
            await defenders.hide(s, defender=row)
        listed = (await c.get("/api/v1/defenders")).json()["items"]
        paused = await c.post(f"{path}/pause")
        restored = await c.post(f"{path}/restore")
    async with await desk.client(desk.a, "admin") as c:
        audit = (await c.get("/api/v1/audit")).json()
    assert active.status_code == 409 and "duress" in active.json()["detail"]
    assert [(d["status"], d["health"]) for d in listed] == [("hidden", "hidden")]
    assert paused.status_code == 409  # a hidden defender is not paused or resumed
    assert restored.status_code == 200 and restored.json()["status"] == "active"
    assert audit["items"][0]["action"] == "defender.restore"


async def test_it_assigns_an_escalation_policy(desk: Desk) -> None:
    assert desk.a.defender and desk.a.policy
    path = f"/api/v1/defenders/{desk.a.defender.id}/policy"
    async with await desk.client(desk.a, "responder") as c:
        set_ = await c.put(path, json={"policy_id": str(desk.a.policy.id)})
        gone = await c.put(path, json={"policy_id": str(uuid.uuid4())})
    assert set_.json()["policy_id"] == str(desk.a.policy.id) and gone.status_code == 404


async def test_it_shows_an_invite_code_once_and_stores_a_blind_index(desk: Desk) -> None:
    async with await desk.client(desk.a, "responder") as c:
        made = (await c.post("/api/v1/invites", json={"valid_hours": 48})).json()
        listed = (await c.get("/api/v1/invites")).json()
        revoked = await c.delete(f"/api/v1/invites/{made['id']}")
        after = {i["id"]: i["state"] for i in (await c.get("/api/v1/invites")).json()}
    assert len(made["code"]) == 8 and made["state"] == "open"
    assert made["code"] not in str(listed)
    assert revoked.status_code == 204 and after[made["id"]] == "revoked"
    async with transaction(desk.sessions) as s:
        row = (
            await s.execute(select(InviteCode).where(InviteCode.id == uuid.UUID(made["id"])))
        ).scalar_one()
        assert made["code"].encode() not in row.code_index
        taken = await defenders.take_invite(
            s, desk.vault, purpose="defender", code=made["code"], now=datetime.now(UTC)
        )
    assert taken is None  # revoked codes do not enrol anyone
