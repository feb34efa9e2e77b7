"""Link codes from the API: a responder's own chat, and the organisation's responder group."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core import desk_chat
from core.db import transaction
from core.defenders import new_address
from core.models import AuditEntry, DeskGroup, InviteCode
from tests.api.conftest import Desk


async def audit(desk: Desk, action: str) -> list[AuditEntry]:
    async with desk.sessions() as s:
        rows = await s.execute(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
        )
        return list(rows.scalars())


async def redeem(desk: Desk, code: str, chat: str) -> uuid.UUID | None:
    async with transaction(desk.sessions) as s:
        address = new_address(desk.vault, "telegram", chat)
        s.add(address)
        await s.flush()
        found = await desk_chat.link_responder(
            s, desk.vault, code=code, address=address, now=_now()
        )
        return None if found is None else found.id


def _now() -> datetime:
    return datetime.now(UTC)


async def test_a_responder_gets_one_live_link_code_at_a_time(desk: Desk) -> None:
    me = desk.a.responders["responder"]
    async with await desk.client(desk.a, "responder") as c:
        first = await c.post("/api/v1/responders/me/link-code")
        second = await c.post("/api/v1/responders/me/link-code")
    assert (first.status_code, second.status_code) == (201, 201)
    body = second.json()
    code = body["code"]
    assert len(code) == 8 and code != first.json()["code"]
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(minutes=14) < expires - _now() <= timedelta(minutes=15)
    async with desk.sessions() as s:
        rows = (
            await s.execute(select(InviteCode).where(InviteCode.created_by == me.id))
        ).scalars()
        states = sorted((r.revoked_at is None, r.purpose) for r in rows)
        assert states == [(False, "responder_link"), (True, "responder_link")]
        stored = await s.execute(select(InviteCode.code_index))
        assert all(code.encode() not in bytes(i) for (i,) in stored)  # only a keyed hash
    assert await redeem(desk, first.json()["code"], "111") is None  # replaced
    assert await redeem(desk, code, "112") == me.id
    assert await redeem(desk, code, "113") is None  # used
    entries = await audit(desk, "responder.link_code")
    assert [(e.actor, e.target) for e in entries] == [(f"responder:{me.id}", str(me.id))] * 2
    assert len(await audit(desk, "responder.chat_link")) == 1


async def test_observers_and_tokens_get_no_link_code(desk: Desk) -> None:
    for role in ("observer", "token"):
        async with await desk.client(desk.a, role) as c:
            assert (await c.post("/api/v1/responders/me/link-code")).status_code == 403
    assert await audit(desk, "responder.link_code") == []


async def test_an_admin_links_and_unlinks_the_group(desk: Desk) -> None:
    async with await desk.client(desk.a, "admin") as c:
        old = (await c.post("/api/v1/desk-group/link-code")).json()["code"]
        answer = await c.post("/api/v1/desk-group/link-code")
        assert answer.status_code == 201
        async with await desk.client(desk.b, "admin") as other:
            foreign = (await other.post("/api/v1/desk-group/link-code")).json()["code"]
        async with transaction(desk.sessions) as s:

            async def link(code: str, group: str = "group.YWJj") -> uuid.UUID | None:
                return await desk_chat.link_group(
                    s, desk.vault, code=code, channel="signal", group=group, now=_now()
                )

            assert await link(old) is None
            assert await link(answer.json()["code"]) == desk.a.org.id
            assert await link(foreign, "group.ZGVm") == desk.b.org.id
        async with desk.sessions() as s:
            rows = {g.org_id for g in (await s.execute(select(DeskGroup))).scalars()}
        assert rows == {desk.a.org.id, desk.b.org.id}
        assert (await c.delete("/api/v1/desk-group")).status_code == 204
        assert (await c.delete("/api/v1/desk-group")).status_code == 404
        async with desk.sessions() as s:
            rows = {g.org_id for g in (await s.execute(select(DeskGroup))).scalars()}
        assert rows == {desk.b.org.id}  # the other organisation's group is untouched
        verify = await c.get("/api/v1/audit/verify")
    assert verify.status_code == 200 and verify.json()["ok"] is True
    actions = [e.action for e in await audit(desk, "desk_group.link_code")]
    assert len(actions) == 3
    assert len(await audit(desk, "desk_group.unlink")) == 1
