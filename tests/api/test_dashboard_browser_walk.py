"""What a responder walking the dashboard in a real headless Chromium (both backends) must not
be misled by: a defender's "I can't talk" read as "they can talk"; a panic left open beside a
duress alert without the warning not to contact the defender; coordinates turned around and
a defender's own words laid out in the page's direction instead of theirs on an Arabic page;
an urgent report's alert with no way to the report; a roll-call's "Needs help" given under duress
with nothing saying not to call; a report's country and language as bare codes."""

from __future__ import annotations

from datetime import timedelta

from playwright.async_api import Browser, Locator, expect

from core import actions, alert_updates, alerts, desk_alerts, rollcalls
from core.db import transaction
from core.i18n import gettext
from core.models import Alert, AlertKind, Organisation, utcnow
from tests.api.conftest import PASSPHRASE, Desk, make_alert, make_report
from tests.api.test_broadcasts import people
from tests.api.test_dashboard_browser import chromium, log_in, page_in, report_with_photo
from tests.core.test_media import jpeg_with_gps

__all__ = ["chromium"]  # the module's fixture, shared

DO_NOT_CONTACT = "Do not contact the defender"
DURESS = "Duress: do not contact the defender. Someone may be watching their phone."


async def direction(element: Locator) -> str:
    return str(await element.evaluate("e => getComputedStyle(e).direction"))


async def test_a_defender_who_cannot_talk_is_never_shown_as_able_to(
    desk: Desk, site: str, chromium: Browser
) -> None:
    alert = desk.a.alert
    assert alert is not None
    async with transaction(desk.sessions) as s:  # flows.panic.talk: "No, I can't talk"
        s.add(actions.event(alert, "can_talk", utcnow(), actor="defender", can_talk=False))
    page, problems = await page_in(chromium)
    await log_in(page, site, desk.a, "responder")
    await page.goto(f"{site}/alerts/{alert.id}")
    said = page.locator("li[data-event=can_talk]")
    await expect(said).to_contain_text("The defender says they cannot talk now: do not call them")
    await expect(said).not_to_contain_text("they can talk")
    await expect(said.locator(".warn")).to_be_visible()

    async with transaction(desk.sessions) as s:  # and later, "Yes, I can talk"
        s.add(actions.event(alert, "can_talk", utcnow(), actor="defender", can_talk=True))
    await page.reload()
    await expect(said.last).to_contain_text("The defender says they can talk")
    assert problems == []


async def test_a_panic_left_open_beside_a_duress_alert_says_not_to_contact_the_defender(
    desk: Desk, site: str, chromium: Browser
) -> None:
    # The defender "called off" their panic with the duress PIN: it stays open (R8), and a
    # duress alert opens beside it. Whichever of the two a responder opens, and in the queue,
    # the desk is told not to call the phone.
    panic = desk.a.alert
    assert panic is not None
    async with transaction(desk.sessions) as s:
        duress = await make_alert(s, desk.a, AlertKind.duress, utcnow())
        duress.do_not_contact = True
        elsewhere = await make_alert(s, desk.b, AlertKind.duress, utcnow())
        elsewhere.do_not_contact = True
    page, problems = await page_in(chromium)
    await log_in(page, site, desk.a, "responder")
    await expect(page.locator(f"tr[data-alert='{duress.id}']")).to_contain_text(DO_NOT_CONTACT)
    await expect(page.locator(f"tr[data-alert='{panic.id}']")).to_contain_text(DO_NOT_CONTACT)
    await page.goto(f"{site}/alerts/{panic.id}")
    await expect(page.get_by_role("alert")).to_have_text(DURESS)

    # Bravo's defender under duress says nothing about alpha's; nor does a closed duress alert.
    async with transaction(desk.sessions) as s:
        row = await s.get(Alert, duress.id)
        assert row is not None
        row.open_key, row.state = None, "resolved"
    await page.goto(site + "/")
    await expect(page.locator(f"tr[data-alert='{panic.id}']")).not_to_contain_text(DO_NOT_CONTACT)
    await page.goto(f"{site}/alerts/{panic.id}")
    await expect(page.locator("h1")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_count(0)
    assert problems == []


async def test_on_an_arabic_page_coordinates_and_a_defenders_words_keep_their_direction(
    desk: Desk, site: str, chromium: Browser
) -> None:
    alert = desk.a.alert
    assert alert is not None
    async with transaction(desk.sessions) as s:
        row = await s.get(Alert, alert.id)
        org = await s.get(Organisation, desk.a.org.id)
        assert row is not None and org is not None
        await alert_updates.add_location(
            s, desk.vault, alert=row, latitude=4.5981, longitude=-74.076, now=utcnow()
        )
        await desk_alerts.add_note(
            s,
            desk.vault,
            alert=row,
            org=org,
            text="Llamé a su hermana.",
            author_id=None,
            actor="defender",
            now=utcnow(),
        )
    page, problems = await page_in(chromium, locale="ar")
    await log_in(page, site, desk.a, "responder", button="تسجيل الدخول")
    await page.goto(f"{site}/alerts/{alert.id}")
    await page.locator("form.unseal input.passphrase").fill(PASSPHRASE)
    await page.locator("form.unseal button").click()
    spot = page.locator("[data-kind=alert_location] a")
    await expect(spot).to_have_text("4.59810, -74.07600")
    # Laid out right to left, "-74.07600" would read "74.07600-" and the pair swap places.
    assert await direction(spot) == "ltr"
    note = page.locator("[data-kind=alert_note]")
    await expect(note).to_have_text("Llamé a su hermana.")
    assert await direction(note) == "ltr"  # its full stop at its end, not at the left

    filed = await report_with_photo(desk, desk.a, jpeg_with_gps(), "door.jpg")
    await page.goto(f"{site}/reports/{filed.id}")
    await page.locator("form.unseal input.passphrase").fill(PASSPHRASE)
    await page.locator("form.unseal button").click()
    told = page.locator("[data-kind=report] .part p", has_text="Two men followed me home.")
    await expect(told).to_be_visible()
    assert await direction(told) == "ltr"
    place = page.locator("[data-kind=report] .part p", has_text="Zona 1, by the market")
    assert await direction(place) == "ltr"
    assert await direction(page.locator("main")) == "rtl"  # the page itself still is
    assert problems == []


async def test_an_urgent_reports_alert_leads_to_the_report(
    desk: Desk, site: str, chromium: Browser
) -> None:
    # flows.report.confirm files the report and raises its alert at the same moment; an
    # earlier report of the defender's is not this alert's.
    org = desk.a
    filed_at = utcnow()
    async with transaction(desk.sessions) as s:
        earlier = make_report(desk.vault, org, "CO")
        earlier.created_at = filed_at - timedelta(days=2)
        urgent = make_report(desk.vault, org, "CO")
        urgent.created_at = filed_at
        s.add_all([earlier, urgent])
        alert = await make_alert(s, org, AlertKind.report, filed_at)
    page, problems = await page_in(chromium)
    await log_in(page, site, org, "responder")
    await page.locator(f"tr[data-alert='{alert.id}'] a").click()
    reports = page.locator("dd.reports")
    await expect(reports.get_by_role("link")).to_have_count(1)
    await reports.get_by_role("link", name=urgent.receipt_code).click()
    await expect(page).to_have_url(f"{site}/reports/{urgent.id}")
    await expect(page.locator("h1")).to_contain_text(urgent.receipt_code)
    assert problems == []


async def test_a_rollcall_answer_under_duress_says_not_to_contact_the_defender(
    desk: Desk, site: str, chromium: Browser
) -> None:
    # "I'm safe" confirmed with the duress PIN: the answer reads "Needs help", a duress alert
    # opens, and the roll-call's page, where a responder sees who needs help, says not to
    # call that phone; a defender who simply needs help is called as usual.
    now = utcnow()
    async with transaction(desk.sessions) as s:
        forced, helpless = await people(
            s, desk, desk.a, ("es", "active", "telegram"), ("en", "active", "signal")
        )
        rollcall = await rollcalls.start(
            s,
            desk.vault,
            org_id=desk.a.org.id,
            text="Everyone check in now.",
            closes_in=timedelta(minutes=30),
            actor="test",
            now=now,
        )
        for who in (forced, helpless):
            await rollcalls.answer(
                s, rollcall_id=rollcall.id, defender_id=who.id, said="help", now=now
            )
        await alerts.raise_alert(s, desk.vault, defender=forced, kind=AlertKind.duress, now=now)
    page, problems = await page_in(chromium)
    await log_in(page, site, desk.a, "responder")
    await page.goto(f"{site}/rollcalls/{rollcall.id}")
    row = page.locator(f"tr[data-defender='{forced.handle}']")
    await expect(row).to_contain_text("Needs help")
    await expect(row.locator(".do-not-contact")).to_have_text(DO_NOT_CONTACT)
    await expect(page.locator(f"tr[data-defender='{helpless.handle}']")).not_to_contain_text(
        DO_NOT_CONTACT
    )
    assert problems == []


async def test_a_reports_country_and_language_read_as_names_not_codes(
    desk: Desk, site: str, chromium: Browser
) -> None:
    filed = await report_with_photo(desk, desk.a, jpeg_with_gps(), "door.jpg")  # GT, "es"
    assert desk.a.report is not None
    _ = gettext("fr")
    page, problems = await page_in(chromium, locale="fr")
    await log_in(page, site, desk.a, "responder", button=_("Log in"))
    await page.goto(f"{site}/reports")
    await expect(page.locator(f"tr[data-report='{filed.id}'] .country")).to_have_text("Guatemala")
    # The CSV-injection canary the fixture files as a country stays as written (and inert).
    await expect(page.locator(f"tr[data-report='{desk.a.report.id}'] .country")).to_have_text(
        '=HYPERLINK("http://x")'
    )
    await page.locator(f"tr[data-report='{filed.id}'] a").click()
    await expect(page.locator("dd.country")).to_have_text("Guatemala")
    await page.locator("form.unseal input.passphrase").fill(PASSPHRASE)
    await page.locator("form.unseal button").click()
    said = page.locator("[data-kind=report] dl.facts dt", has_text=_("Language"))
    await expect(said.locator("xpath=following-sibling::dd[1]")).to_have_text("espagnol")
    assert problems == []
