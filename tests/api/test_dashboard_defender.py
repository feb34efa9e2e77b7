"""A defender's own page on the dashboard (both backends): a responder who sees a handle on an
alert, a report or the audit log can open who that is to the desk (check-in health, the
regular check-in, channels and contacts counted, never an address or a contact's name,
their alerts and reports), and pause or resume them there. Only the responder's own
organisation's defenders; opening the page is audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import select

from core import audit, checkins
from core.db import transaction
from core.defenders import new_address
from core.models import (
    AlertKind,
    AuditEntry,
    Consent,
    Defender,
    DefenderStatus,
    TrustedContact,
)
from tests.api.conftest import Desk, make_alert
from tests.api.test_dashboard import browser

CHAT = "555000111"


async def furnish(desk: Desk) -> None:
    """Desk A's defender: a regular check-in, Telegram (blocked) and Signal, two contacts
    (one answered), a second, resolved alert."""
    a = desk.a
    assert a.defender is not None
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        defender = await s.get(Defender, a.defender.id)
        assert defender is not None
        defender.locale, defender.timezone = "es", "America/Bogota"
        telegram = new_address(desk.vault, "telegram", CHAT)
        telegram.defender_id, telegram.blocked_at = defender.id, now
        signal = new_address(desk.vault, "signal", "+573001112233")
        signal.defender_id, signal.preference = defender.id, 1
        s.add_all([telegram, signal])
        await checkins.set_routine(
            s, defender=defender, local_time=time(20, 30), days="01234", now=now
        )
        for label, consent in (("Rosa", Consent.confirmed), ("Tomás", Consent.invited)):
            contact = TrustedContact(id=uuid.uuid4(), defender_id=defender.id, consent=consent)
            contact.put(desk.vault, "label_enc", label)
            s.add(contact)
        await make_alert(s, a, AlertKind.missed_checkin, now - timedelta(days=2), resolved=True)


async def test_a_defenders_page_shows_what_the_desk_may_know(desk: Desk) -> None:
    await furnish(desk)
    a = desk.a
    assert a.defender and a.alert and a.report
    async with browser(desk, a, "responder") as (c, _csrf):
        answer = await c.get(f"/defenders/{a.defender.id}")
    page = answer.text
    assert answer.status_code == 200
    assert f'<h1 class="handle">{a.defender.handle}</h1>' in page
    assert f'<a class="open-alert" href="/alerts/{a.alert.id}">Open alert</a>' in page
    assert (
        '<span dir="ltr">20:30</span> · Monday, Tuesday, Wednesday, Thursday, and Friday' in page
    )
    assert "America/Bogota" in page and ">Spanish<" in page
    assert 'Telegram <strong class="warn">cannot be reached there</strong>, Signal' in page
    assert "1 confirmed · 1 not answered yet" in page
    assert 'class="policy">The organisation\'s default</dd>' in page
    assert page.count("data-alert=") == 2 and f'href="/reports/{a.report.id}"' in page
    for secret in (CHAT, "+573001112233", "Rosa", "Tomás"):  # never an address or a name
        assert secret not in page
    async with desk.sessions() as s:
        viewed = await s.execute(select(AuditEntry).where(AuditEntry.action == "defender.view"))
        (entry,) = viewed.scalars()
    assert entry.target == str(a.defender.id) and entry.org_id == a.org.id


async def test_it_is_linked_from_the_list_an_alert_a_report_and_the_audit_log(
    desk: Desk,
) -> None:
    a = desk.a
    assert a.defender and a.alert and a.report
    href = f'href="/defenders/{a.defender.id}"'
    async with browser(desk, a, "admin") as (c, csrf):
        assert f'<a class="handle" {href}>' in (await c.get("/defenders")).text
        assert f'<a class="defender" {href}>' in (await c.get(f"/alerts/{a.alert.id}")).text
        assert f'<a class="defender" {href}>' in (await c.get(f"/reports/{a.report.id}")).text
        paused = await c.post(
            f"/defenders/{a.defender.id}/pause", data={"csrf": csrf, "back": "defender"}
        )
        assert paused.headers["location"] == f"/defenders/{a.defender.id}"  # back to the page
        page = (await c.get(f"/defenders/{a.defender.id}")).text
        assert ">Resume check-ins</button>" in page and ">Paused<" in page
        audit = (await c.get("/audit")).text
    assert f'<a class="target" {href} title="{a.defender.id}">{a.defender.handle}</a>' in audit


async def test_another_organisations_defender_or_a_deleted_one_is_not_found(desk: Desk) -> None:
    assert desk.b.defender is not None
    gone = Defender(
        id=uuid.uuid4(), org_id=desk.a.org.id, handle="gone-owl", status=DefenderStatus.deleted
    )
    async with transaction(desk.sessions) as s:
        s.add(gone)
    async with browser(desk, desk.a, "observer") as (c, _csrf):
        for ident in (desk.b.defender.id, gone.id, uuid.uuid4()):
            answer = await c.get(f"/defenders/{ident}")
            assert answer.status_code == 404
            assert desk.b.defender.handle not in answer.text


async def test_an_observer_sees_the_page_without_the_forms_and_arabic_reads_right_to_left(
    desk: Desk,
) -> None:
    await furnish(desk)
    a = desk.a
    assert a.defender is not None
    async with browser(desk, a, "observer") as (c, _csrf):
        page = (await c.get(f"/defenders/{a.defender.id}")).text
        arabic = await c.get(f"/defenders/{a.defender.id}", headers={"accept-language": "ar"})
    assert "Pause check-ins" not in page and '<form method="post" action="/defenders' not in page
    assert 'dir="rtl"' in arabic.text and "جهات الاتصال الموثوقة" in arabic.text
    assert "</strong> وSignal" in arabic.text  # the language's own list, not a Latin comma


async def test_the_audit_log_does_not_link_a_deleted_defender(desk: Desk) -> None:
    """Their handle stays in the trail; their page is gone (it would answer 404)."""
    gone = Defender(
        id=uuid.uuid4(), org_id=desk.a.org.id, handle="gone-owl", status=DefenderStatus.deleted
    )
    async with transaction(desk.sessions) as s:
        s.add(gone)
        await s.flush()
        actor = f"responder:{desk.a.responders['admin'].id}"
        await audit.record(
            s, desk.vault, actor=actor, action="defender.pause", target=str(gone.id),
            org_id=desk.a.org.id,
        )  # fmt: skip
    async with browser(desk, desk.a, "admin") as (c, _csrf):
        page = (await c.get("/audit")).text
    assert f'<span class="target" title="{gone.id}">gone-owl</span>' in page
    assert f"/defenders/{gone.id}" not in page
