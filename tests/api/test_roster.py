"""The on-duty roster tells who a P0 alert pages, as paging itself chooses (both backends):
on-duty responders with a linked chat; else everyone with one; on duty without a chat is
never paged, and the page says so, as it says when no one is reachable at all."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import delete, update

from core import recipients
from core.db import transaction
from core.models import ChannelAddress, DeskGroup, Responder
from tests.api.conftest import Desk
from tests.api.test_dashboard import browser
from tests.engine.conftest import address

ROW = re.compile(r'data-responder="([^"]+)" data-paged="(yes|no)"')
FIELDS = {"id", "username", "role", "active", "on_duty"}  # the contract before "paged"


async def link(desk: Desk, role: str, chat: str) -> None:
    """The responder of org A with ``role`` links a private chat with the bot."""
    async with transaction(desk.sessions) as s:
        s.add(address(desk.vault, "telegram", chat, responder_id=desk.a.responders[role].id))


async def paged_by_paging(desk: Desk) -> set[str]:
    """The usernames paging itself reaches (core.recipients.desk)."""
    names = {r.id: r.username for r in desk.a.responders.values()}
    async with desk.sessions() as s:
        chosen = await recipients.desk(s, desk.a.org.id)
    return {names[r.person] for r in chosen if r.role == "responder"}


async def roster(desk: Desk, c: httpx.AsyncClient) -> dict[str, tuple[bool, bool]]:
    """GET /roster, checked against paging: username -> (on_duty, paged)."""
    answer = await c.get("/api/v1/roster")
    assert answer.status_code == 200
    rows = answer.json()
    assert all(FIELDS <= set(r) for r in rows)
    assert {r["username"] for r in rows if r["paged"]} == await paged_by_paging(desk)
    return {r["username"]: (r["on_duty"], r["paged"]) for r in rows}


async def test_the_roster_reports_who_paging_reaches(desk: Desk) -> None:
    async with await desk.client(desk.a, "token") as c:
        # A fresh desk: the responder is on duty but has linked no chat. No one is paged.
        assert await roster(desk, c) == {"responder-alpha": (True, False)}

        # The admin (off duty) links a chat: nobody on duty is reachable, so the admin is
        # paged; an observer's chat changes nothing (observers are never paged).
        await link(desk, "admin", "101")
        await link(desk, "observer", "102")
        assert await roster(desk, c) == {
            "admin-alpha": (False, True),
            "responder-alpha": (True, False),
        }

        # The on-duty responder links a chat: only they are paged now.
        await link(desk, "responder", "103")
        assert await roster(desk, c) == {"responder-alpha": (True, True)}

        # Nobody on duty: everyone with a linked chat is paged.
        async with transaction(desk.sessions) as s:
            await s.execute(update(Responder).values(on_duty=False))
        assert await roster(desk, c) == {
            "admin-alpha": (False, True),
            "responder-alpha": (False, True),
        }
    async with await desk.client(desk.b, "token") as c:  # the other organisation's own roster
        assert [r["username"] for r in (await c.get("/api/v1/roster")).json()] == []


async def page_of(c: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    page = await c.get("/roster")
    assert page.status_code == 200
    return page.text, dict(ROW.findall(page.text))


async def test_the_roster_page_says_who_is_paged_and_when_nobody_is(desk: Desk) -> None:
    async with browser(desk, desk.a, "observer") as (c, _csrf):
        text, rows = await page_of(c)
        assert rows == {"responder-alpha": "no"}
        assert "Nobody is reachable: no responder has linked a chat with the bot" in text
        assert "No: on duty, but no linked chat with the bot" in text

        await link(desk, "admin", "101")
        text, rows = await page_of(c)
        assert rows == {"admin-alpha": "yes", "responder-alpha": "no"}
        assert "Nobody on duty has linked a chat with the bot, so every responder" in text
        assert "Nobody is reachable" not in text

        await link(desk, "responder", "103")
        async with transaction(desk.sessions) as s:
            group = address(desk.vault, "telegram", "-100")
            s.add(group)
            await s.flush()
            s.add(DeskGroup(org_id=desk.a.org.id, address_id=group.id))
        text, rows = await page_of(c)
        assert rows == {"responder-alpha": "yes"}
        assert "Yes: on duty" in text and "The responder group chat is paged too." in text
        assert "Nobody" not in text

        async with transaction(desk.sessions) as s:
            await s.execute(update(Responder).values(on_duty=False))
        text, rows = await page_of(c)
        assert rows == {"admin-alpha": "yes", "responder-alpha": "yes"}
        assert "Nobody is on duty, so every responder who linked a chat" in text

        async with transaction(desk.sessions) as s:
            stmt = delete(ChannelAddress).where(ChannelAddress.responder_id.is_not(None))
            await s.execute(stmt)
        text, rows = await page_of(c)
        assert rows == {}
        assert "Only the responder group chat is paged for P0 alerts." in text


async def test_the_roster_page_reads_right_to_left_in_arabic(desk: Desk) -> None:
    async with browser(desk, desk.a, "observer") as (c, _csrf):
        page = await c.get("/roster", headers={"Accept-Language": "ar"})
    assert '<html lang="ar" dir="rtl">' in page.text
    assert "لا يمكن الوصول إلى أحد" in page.text  # "Nobody is reachable"
    assert "لا: في المناوبة، لكن دون محادثة مربوطة مع البوت" in page.text
    assert "Nobody" not in page.text and "linked chat" not in page.text
