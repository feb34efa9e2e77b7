"""The links a responder expects between the desk's pages (both backends). The defenders page
said "Open alert" beside a handle without leading to that alert, and a report's page did not
lead to the urgent-report alert it raised (the alert's page already listed its reports). Now
"Open alert" links to the defender's most urgent open alert (the handle, to their own page),
and the report page to the alert it raised or was folded into; only the responder's
organisation's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from core.db import transaction
from core.models import AlertKind, Defender, DefenderStatus
from tests.api.conftest import Desk, make_alert, make_report
from tests.api.test_dashboard import browser


def row_of(page: str, handle: str) -> str:
    row = page[page.index(f'data-defender="{handle}"') :]
    return row[: row.index("</tr>")]


async def test_the_defenders_page_links_a_defender_to_their_open_alert(desk: Desk) -> None:
    a, b = desk.a, desk.b
    assert a.defender and a.alert and b.alert
    quiet = Defender(
        id=uuid.uuid4(), org_id=a.org.id, handle="quiet-otter", status=DefenderStatus.active
    )
    async with transaction(desk.sessions) as s:
        s.add(quiet)
        # A newer, less urgent alert of the same defender: the panic (P0) is the one linked.
        await make_alert(s, a, AlertKind.missed_checkin, datetime.now(UTC))
    async with browser(desk, a, "admin") as (c, _csrf):
        page = (await c.get("/defenders")).text
    alerting = row_of(page, a.defender.handle)
    href = f'href="/alerts/{a.alert.id}"'
    # The handle leads to the defender's own page (tests/api/test_dashboard_defender.py).
    mine = f'href="/defenders/{a.defender.id}"'
    assert f'<a class="handle" {mine}>{a.defender.handle}</a>' in alerting
    assert f'<a class="open-alert" {href}>Open alert</a>' in alerting
    calm = row_of(page, "quiet-otter")
    assert "/alerts/" not in calm and f'href="/defenders/{quiet.id}">quiet-otter</a>' in calm
    assert str(b.alert.id) not in page


async def test_a_report_page_links_to_the_alert_it_raised(desk: Desk) -> None:
    a, b = desk.a, desk.b
    assert a.defender and b.defender
    at = datetime.now(UTC) - timedelta(minutes=5)
    async with transaction(desk.sessions) as s:
        raised = await make_alert(s, a, AlertKind.report, at)
        urgent = make_report(desk.vault, a, "BR")
        urgent.created_at = at  # filed with its alert, as flows.report does
        folded = make_report(desk.vault, a, "BR")  # filed while that alert was open
        folded.created_at = at + timedelta(minutes=1)
        early = make_report(desk.vault, a, "BR")  # filed before that alert was raised
        early.created_at = at - timedelta(minutes=1)
        s.add_all([urgent, folded, early])
        # Another organisation's report alert at the same moment: never linked from A's page.
        await make_alert(s, b, AlertKind.report, at)
    async with browser(desk, a, "admin") as (c, _csrf):
        for report in (urgent, folded):
            page = (await c.get(f"/reports/{report.id}")).text
            assert f'<a class="raised-alert" href="/alerts/{raised.id}">' in page
            assert "Urgent report · Waiting for a responder</a>" in page
        # A report filed before the alert: no link.
        plain = (await c.get(f"/reports/{early.id}")).text
        assert 'class="raised-alert"' not in plain
        alert_page = (await c.get(f"/alerts/{raised.id}")).text
        assert f'href="/reports/{urgent.id}"' in alert_page  # and the way back, as before
