"""The dashboard's assign and reopen (both backends): CSRF, roles, tenancy, audit."""

from __future__ import annotations

from sqlalchemy import select

from core.models import Alert, AlertState, AuditEntry
from tests.api.conftest import Desk
from tests.api.test_dashboard import browser, state_of


async def assigned(desk: Desk) -> object:
    assert desk.a.alert is not None
    async with desk.sessions() as s:
        alert = await s.get(Alert, desk.a.alert.id)
        assert alert is not None
        return alert.assigned_to


async def test_a_responder_assigns_an_alert_and_reopens_it_once_resolved(desk: Desk) -> None:
    assert desk.a.alert is not None
    url = f"/alerts/{desk.a.alert.id}"
    me = desk.a.responders["responder"]
    stranger = desk.b.responders["responder"]  # another organisation's
    async with browser(desk, desk.a, "responder") as (c, csrf):
        page = await c.get(url)
        assert '<dd class="assignee">Nobody</dd>' in page.text
        assert f'<option value="{me.id}">{me.username}</option>' in page.text
        assert str(stranger.id) not in page.text

        forged = await c.post(url + "/assign", data={"csrf": "x" * 43, "responder": str(me.id)})
        assert forged.headers["location"] == "/login" and await assigned(desk) is None
        foreign = await c.post(url + "/assign", data={"csrf": csrf, "responder": str(stranger.id)})
        assert foreign.headers["location"] == url and await assigned(desk) is None

        answer = await c.post(url + "/assign", data={"csrf": csrf, "responder": str(me.id)})
        assert answer.headers["location"] == url + "?notice=assigned"
        assert await assigned(desk) == me.id
        page = await c.get(answer.headers["location"])
        assert f'<dd class="assignee">{me.username}</dd>' in page.text
        assert 'data-event="assigned"' in page.text
        await c.post(url + "/assign", data={"csrf": csrf, "responder": ""})
        assert await assigned(desk) is None

        assert "Reopen the alert" not in page.text  # open: nothing to reopen
        await c.post(url + "/resolve", data={"csrf": csrf, "outcome": "false_alarm"})
        page = await c.get(url)
        assert "Reopen the alert" in page.text and "Assign to" not in page.text
        answer = await c.post(url + "/reopen", data={"csrf": csrf})
        assert answer.headers["location"] == url + "?notice=reopened"
        assert await state_of(desk, desk.a) is AlertState.triggered
        again = await c.post(url + "/reopen", data={"csrf": csrf})
        assert again.headers["location"] == url + "?notice=still_open"
    async with desk.sessions() as s:
        actions = set(
            (
                await s.execute(
                    select(AuditEntry.action).where(AuditEntry.org_id == desk.a.org.id)
                )
            ).scalars()
        )
    assert {"alert.assign", "alert.reopen"} <= actions


async def test_an_observer_cannot_assign_or_reopen(desk: Desk) -> None:
    assert desk.a.alert is not None
    url = f"/alerts/{desk.a.alert.id}"
    me = desk.a.responders["observer"]
    async with browser(desk, desk.a, "observer") as (c, csrf):
        page = await c.get(url)
        assert "Assign to" not in page.text
        answer = await c.post(url + "/assign", data={"csrf": csrf, "responder": str(me.id)})
        assert answer.headers["location"] == url + "?notice=forbidden"
        answer = await c.post(url + "/reopen", data={"csrf": csrf})
        assert answer.headers["location"] == url + "?notice=forbidden"
    assert await assigned(desk) is None


async def test_another_organisations_alert_is_not_found(desk: Desk) -> None:
    assert desk.b.alert is not None
    async with browser(desk, desk.a, "admin") as (c, csrf):
        for action in ("assign", "reopen"):
            answer = await c.post(f"/alerts/{desk.b.alert.id}/{action}", data={"csrf": csrf})
            assert answer.status_code == 404
