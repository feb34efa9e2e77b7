"""A desk revokes an invite code at the moment a defender redeems it. The revoke read the code
as unused before the redeeming committed, and wrote afterwards: the code ended used and
revoked at once, the desk was told it was revoked (204) and audited so, while a defender had
enrolled with it. The code is now read under its lock: the revoke that comes second answers
409, and the code stays used only.

The overlap is forced: a blocker redeems the code (core.defenders.take_invite, as the bot does)
and holds it (SQLite: the single writer's lock) while the revoke starts and waits on a lock
(PostgreSQL), or is about to (SQLite, where no view shows the wait: the revoke says so)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from core import audit, defenders, desk_defenders
from core.claims import dialect, write_lock
from core.db import transaction
from core.models import AuditEntry, InviteCode
from tests.api.conftest import Desk
from tests.engine.test_lock_order import deadlock, overlap


async def test_a_code_redeemed_meanwhile_is_not_revoked(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with transaction(desk.sessions) as s:
        invite, code = await defenders.create_invite(
            s, desk.vault, org_id=desk.a.org.id, purpose="defender", now=datetime.now(UTC)
        )
    waiting = asyncio.Event()  # the revoke is about to wait for the writer's lock (SQLite)
    for module, name in ((desk_defenders, "write_lock"), (audit, "record")):
        real = getattr(module, name)

        async def signal(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            waiting.set()
            return await _real(*args, **kwargs)

        monkeypatch.setattr(module, name, signal)
    me = await desk.client(desk.a, "responder")
    started: list[asyncio.Task[httpx.Response]] = []
    async with transaction(desk.sessions) as blocker:
        await write_lock(blocker)
        taken = await defenders.take_invite(
            blocker, desk.vault, purpose="defender", code=code, now=datetime.now(UTC)
        )
        assert taken is not None
        started.append(asyncio.create_task(me.delete(f"/api/v1/invites/{invite.id}")))
        if dialect(blocker) == "postgresql":
            await overlap(desk.sessions, 1, started)
        else:
            await asyncio.wait_for(waiting.wait(), 10)
    done = await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), 30)
    assert not [e for e in done if isinstance(e, BaseException) and deadlock(e)], done
    revoked = done[0]
    assert isinstance(revoked, httpx.Response), revoked
    assert revoked.status_code == 409, revoked.text
    async with desk.sessions() as s:
        row = (await s.execute(select(InviteCode).where(InviteCode.id == invite.id))).scalar_one()
        logged = select(AuditEntry.seq).where(AuditEntry.action == "invite.revoke")
        assert (await s.execute(logged)).all() == []
    assert row.used_at is not None and row.revoked_at is None
