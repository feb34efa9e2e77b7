"""Broadcasts and roll-calls page back with a cursor, as the desk's other lists do."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.paging import NEXT_CURSOR
from core.db import transaction
from core.models import Broadcast
from tests.api.conftest import Desk, Org

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


async def sent(desk: Desk, org: Org, n: int, *, rollcalls: bool) -> list[str]:
    """``n`` broadcasts (or roll-calls) of ``org``, two of each three at the same instant (the
    id orders those); their ids newest first, as the API lists them."""
    made = []
    async with transaction(desk.sessions) as s:
        for i in range(n):
            at = START + timedelta(minutes=i // 3 * 2 + (i % 3 == 2))
            b = Broadcast(
                id=uuid.uuid4(),
                org_id=org.org.id,
                sent_by="test",
                created_at=at,
                closes_at=at + timedelta(hours=1) if rollcalls else None,
                recipients=0,
            )
            b.put(desk.vault, "text_enc", f"check in {i}")
            s.add(b)
            made.append(b)
    made.sort(key=lambda b: (b.created_at, b.id.hex), reverse=True)
    return [str(b.id) for b in made]


@pytest.mark.parametrize("path", ["/api/v1/broadcasts", "/api/v1/rollcalls"])
async def test_it_walks_every_entry_once_newest_first(desk: Desk, path: str) -> None:
    rollcalls = path.endswith("rollcalls")
    expected = await sent(desk, desk.a, 8, rollcalls=rollcalls)
    foreign = set(await sent(desk, desk.b, 4, rollcalls=rollcalls))
    walked, pages, cursor = [], 0, None
    async with await desk.client(desk.a, "token") as c:
        whole = await c.get(path)  # as before: the latest, a bare array, no cursor
        while True:
            params = {"limit": 3} | ({} if cursor is None else {"cursor": cursor})
            answer = await c.get(path, params=params)
            assert answer.status_code == 200
            walked += [item["id"] for item in answer.json()]
            pages += 1
            cursor = answer.headers.get(NEXT_CURSOR)
            if cursor is None:
                break
        refused = await c.get(path, params={"cursor": "not-a-cursor"})
    assert walked == expected and pages == 3
    assert not foreign & set(walked)
    assert [item["id"] for item in whole.json()] == expected
    assert NEXT_CURSOR not in whole.headers
    assert refused.status_code == 422
