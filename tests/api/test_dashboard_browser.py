"""The responders' dashboard in a real headless Chromium (Debian's, driven by Playwright), on
both backends: a responder logs in with a TOTP code, acknowledges and resolves an alert; Arabic
lays out right to left; another site's form cannot act; a roll-call is started and closed;
the CSP holds (no violations)."""

from __future__ import annotations

import hashlib
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nacl.public import PrivateKey
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect
from sqlalchemy import delete, select

from api.dashboard_keys import fingerprint
from core import alert_updates, desk_alerts, reports
from core.crypto import seal
from core.db import transaction
from core.messages import InboundAttachment
from core.models import (
    Alert,
    AlertKind,
    AlertState,
    Broadcast,
    Defender,
    Evidence,
    Organisation,
    Report,
    Responder,
    utcnow,
)
from core.sealing import unprotect_private_key
from flows.report import WITHHELD
from tests.api.conftest import PASSPHRASE, PASSWORD, Desk, Org, code, make_alert
from tests.core.test_media import jpeg_with_gps


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    # Never skipped silently: `make test` installs Debian's chromium (scripts/ensure-chromium).
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path is not None, "Debian's chromium is not installed: run `make test`"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        await browser.close()


async def page_in(chromium: Browser, locale: str = "en-GB") -> tuple[Page, list[str]]:
    context = await chromium.new_context(locale=locale)
    page = await context.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":  # a CSP violation is reported here
            problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page, problems


async def log_in(page: Page, site: str, org: Org, role: str, button: str = "Log in") -> None:
    await page.goto(site + "/")  # a stranger lands on the login page
    await page.locator("input[name=username]").fill(org.responders[role].username)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("input[name=totp]").fill(code(org.totp[role]))
    await page.get_by_role("button", name=button).click()


async def alert_state(desk: Desk, org: Org) -> tuple[AlertState, str | None]:
    assert org.alert is not None
    async with desk.sessions() as s:
        alert = await s.get(Alert, org.alert.id)
        assert alert is not None
        return alert.state, alert.outcome


async def test_a_responder_logs_in_acknowledges_and_resolves_an_alert(
    desk: Desk, site: str, chromium: Browser
) -> None:
    page, problems = await page_in(chromium)
    await log_in(page, site, desk.a, "responder")
    await expect(page).to_have_url(site + "/")
    waiting = page.locator("section[data-state=triggered]")
    await expect(waiting.get_by_role("heading")).to_contain_text("Waiting for a responder")
    row = waiting.locator("tbody tr")
    await expect(row).to_have_count(1)  # alpha's panic, and nothing of bravo's
    await expect(row.locator(".badge")).to_have_text("P0")
    await expect(row).to_contain_text("Panic")

    await row.get_by_role("link", name="calm-heron-alpha").click()
    await page.get_by_role("button", name="Acknowledge: I'm on it").click()
    await expect(page.get_by_role("status")).to_have_text("You acknowledged the alert.")
    await expect(page.locator("dd.state")).to_have_text("Acknowledged")
    await expect(page.locator("li[data-event=acknowledged]")).to_contain_text("responder-alpha")
    assert await alert_state(desk, desk.a) == (AlertState.acknowledged, None)
    await page.get_by_label("Assign to").select_option(label="responder-alpha")
    await page.get_by_role("button", name="Assign", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text("The alert's assignment is saved.")
    await expect(page.locator("dd.assignee")).to_have_text("responder-alpha")

    await page.get_by_label("Outcome").select_option("false_alarm")
    await page.get_by_role("button", name="Resolve", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text("You resolved the alert.")
    await expect(page.locator("section[data-state=triggered] tbody tr")).to_have_count(0)
    assert await alert_state(desk, desk.a) == (AlertState.resolved, "false_alarm")

    await page.get_by_role("link", name="Defenders").click()
    await expect(page.locator("tr[data-defender=calm-heron-alpha] .health")).to_be_visible()
    await page.get_by_label("Valid for").select_option("30")
    await page.get_by_role("button", name="Create an invite code").click()
    await expect(page.locator(".invite-code")).to_have_text(re.compile(r"^[0-9A-Z-]{6,}$"))
    await expect(page.locator("table.invites tbody tr")).to_have_count(2)  # and the fixture's

    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(site + "/login")
    await page.goto(site + "/")
    await expect(page).to_have_url(site + "/login")  # the session is over
    kept = {c["name"]: c for c in await page.context.cookies()}
    device = kept["__Host-amparo_device"]  # the browser stays a known device (api.devices)
    assert (device["httpOnly"], device["secure"], device["sameSite"]) == (True, True, "Strict")
    assert problems == []


async def test_arabic_reads_right_to_left(desk: Desk, site: str, chromium: Browser) -> None:
    page, problems = await page_in(chromium, locale="ar")
    await log_in(page, site, desk.a, "observer", button="تسجيل الدخول")
    await expect(page.locator("html")).to_have_attribute("dir", "rtl")
    await expect(page.locator("section[data-state=triggered] h2")).to_contain_text(
        "بانتظار مستجيب"
    )
    assert await page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    # Mirrored: the name of the desk sits at the right, the logout form at the left.
    brand = await page.locator(".brand").bounding_box()
    logout = await page.locator("form.who").bounding_box()
    assert brand is not None and logout is not None and brand["x"] > logout["x"]
    assert problems == []


async def test_another_sites_form_cannot_act_for_a_logged_in_responder(
    desk: Desk, site: str, chromium: Browser
) -> None:
    page, _problems = await page_in(chromium)
    await log_in(page, site, desk.a, "responder")
    await expect(page).to_have_url(site + "/")
    assert desk.a.alert is not None
    # A page of another origin posts to the desk: the browser sends no cookie along
    # (SameSite=Strict), and the form has no CSRF token to give.
    await page.set_content(
        f'<form method="post" action="{site}/alerts/{desk.a.alert.id}/acknowledge">'
        '<input name="csrf" value="guess"><button>win a prize</button></form>'
    )
    await page.get_by_role("button", name="win a prize").click()
    await expect(page).to_have_url(site + "/login")
    assert await alert_state(desk, desk.a) == (AlertState.triggered, None)


async def test_sealed_items_open_in_the_browser_and_the_passphrase_stays_there(
    desk: Desk, site: str, chromium: Browser
) -> None:
    org, alert = desk.a, desk.a.alert
    assert alert is not None and org.org.public_key is not None
    async with transaction(desk.sessions) as s:
        row = await s.get(Alert, alert.id)
        assert row is not None
        await alert_updates.add_location(
            s, desk.vault, alert=row, latitude=14.63492, longitude=-90.50688, now=utcnow()
        )
    page, problems = await page_in(chromium)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.url} {r.post_data or ''}"))
    await log_in(page, site, org, "responder")
    await page.goto(f"{site}/alerts/{alert.id}")
    await page.get_by_label("New note").fill("Called her lawyer; she is at the station.")
    await page.get_by_role("button", name="Add the note").click()
    await expect(page.get_by_role("status").first).to_have_text(
        "Your note is sealed to the organisation's key."
    )
    location = page.locator("[data-kind=alert_location]")
    note = page.locator("[data-kind=alert_note]")
    await expect(location).to_have_text("Sealed to your organisation's key")

    await page.get_by_label("Organisation passphrase").fill("not the passphrase")
    await page.get_by_role("button", name="Open the sealed items in this browser").click()
    status = page.locator("form.unseal .status")
    await expect(status).to_have_text("wrong passphrase for the organisation key")
    await expect(note).to_have_text("Sealed to your organisation's key")

    await page.get_by_label("Organisation passphrase").fill(PASSPHRASE)
    await page.get_by_role("button", name="Open the sealed items in this browser").click()
    await expect(status).to_contain_text("Opened in this browser only")
    await expect(location.locator("a")).to_have_text("14.63492, -90.50688")
    await expect(location.locator("a")).to_have_attribute("href", "geo:14.63492,-90.50688")
    await expect(note).to_have_text("Called her lawyer; she is at the station.")
    await expect(page.get_by_label("Organisation passphrase")).to_have_value("")
    assert not [r for r in sent if "passphrase" in r or "not%20the" in r]
    assert problems == []


async def test_a_sealed_item_moved_to_another_record_is_refused(
    desk: Desk, site: str, chromium: Browser
) -> None:
    """Whoever holds the database moves a sealed item to another record: it opens with the
    key, but names another record, so the browser refuses to show it."""
    org, alert = desk.a, desk.a.alert
    assert alert is not None and org.org.public_key is not None
    elsewhere = seal(
        org.org.public_key,
        org_id=org.org.id,
        record_id=uuid.uuid4(),
        kind="alert_location",
        body={"latitude": 1.0, "longitude": 2.0},
    )
    async with transaction(desk.sessions) as s:
        row = await s.get(Alert, alert.id)
        other = await make_alert(s, org, AlertKind.report, utcnow(), resolved=True)
        assert row is not None
        row.location_sealed = elsewhere
        # a note written on another alert, then moved to this one
        note = await desk_alerts.add_note(
            s,
            desk.vault,
            alert=other,
            org=org.org,
            text="MOVED-NOTE",
            author_id=None,
            actor="test",
            now=utcnow(),
        )
        await s.flush()
        note.alert_id = alert.id
    page, problems = await page_in(chromium)
    await log_in(page, site, org, "observer")
    await page.goto(f"{site}/alerts/{alert.id}")
    await page.get_by_label("Organisation passphrase").fill(PASSPHRASE)
    await page.get_by_role("button", name="Open the sealed items in this browser").click()
    swapped = "This item belongs to another record; it may have been swapped."
    await expect(page.locator("[data-kind=alert_location]")).to_have_text(swapped)
    await expect(page.locator("[data-kind=alert_note]")).to_have_text(swapped)
    assert "1.00000" not in await page.content() and "MOVED-NOTE" not in await page.content()
    assert problems == []


async def report_with_photo(
    desk: Desk, org: Org, photo: bytes, name: str, **answers: Any
) -> Report:
    """``answers``: the body's answers that differ from the usual ones."""
    assert org.defender is not None
    async with transaction(desk.sessions) as s:
        defender = await s.get(Defender, org.defender.id)
        assert defender is not None
        rid, now = uuid.uuid4(), utcnow()
        parts = [
            await reports.seal_part(
                s, defender=defender, report_id=rid, body={"text": "Two men followed me home."}
            ),
            await reports.seal_part(
                s, defender=defender, report_id=rid, body={"place": "Zona 1, by the market"}
            ),
            await reports.seal_part(
                s,
                defender=defender,
                report_id=rid,
                body={"text": "His plate is on the photo.", "caption": [str(uuid.uuid4())]},
            ),
            await reports.seal_part(  # a PIN typed as an answer: not kept (flows.report)
                s, defender=defender, report_id=rid, body=dict(WITHHELD)
            ),
        ]
        attachment = InboundAttachment("photo", "image/jpeg", len(photo), photo, name)
        await reports.add_evidence(
            s, defender=defender, report_id=rid, attachment=attachment, now=now
        )
        body = {
            "format": "amparo-report-1",
            "type_of_act": {"code": "02010303", "answer": "surveillance"},
            "initial_date": "2026-12-01",
            "perpetrator_type": "police",
            "affected": "me",
            "consent": "anonymous",
            "priority": "urgent",
            "language": "es",
            "parts": parts,
            **answers,
        }
        triage = {"type_of_act": "02010303", "urgency": "urgent", "country": "GT"}
        return await reports.file(
            s, desk.vault, defender=defender, report_id=rid, triage=triage, body=body, now=now
        )


async def open_report(
    chromium: Browser, site: str, org: Org, filed: Report
) -> tuple[Page, list[str]]:
    page, problems = await page_in(chromium)
    await log_in(page, site, org, "responder")
    await page.get_by_role("link", name="Reports").click()
    await page.locator(f"tr[data-report='{filed.id}'] a").click()
    await expect(page.locator("h1")).to_contain_text(filed.receipt_code)
    await page.get_by_label("Organisation passphrase").fill(PASSPHRASE)
    await page.get_by_role("button", name="Open the sealed items in this browser").click()
    await expect(page.locator("[data-kind='report.evidence']")).to_contain_text("SHA-256")
    return page, problems


async def test_a_count_withheld_as_a_pin_is_said_so(
    desk: Desk, site: str, chromium: Browser
) -> None:
    """A defender's "how many people" that was one of their PINs is not in the report
    (flows.report): the desk reads that a number was withheld there, not an empty count."""
    filed = await report_with_photo(
        desk, desk.a, jpeg_with_gps(), "door.jpg",
        affected="others", count=None, count_withheld="pin",
    )  # fmt: skip
    page, problems = await open_report(chromium, site, desk.a, filed)
    facts = page.locator("[data-kind=report] dl.facts")
    count = facts.locator("dt", has_text="How many people")
    await expect(count).to_have_count(1)
    await expect(facts).to_contain_text(
        "Here the defender typed one of their PINs: it was not kept in the report."
    )
    assert problems == []


async def test_a_report_its_parts_and_its_evidence_open_in_the_browser(
    desk: Desk, site: str, chromium: Browser
) -> None:
    photo = jpeg_with_gps()
    filed = await report_with_photo(desk, desk.a, photo, "door.jpg")
    page, problems = await open_report(chromium, site, desk.a, filed)
    report = page.locator("[data-kind=report]")
    await expect(report).to_contain_text("Two men followed me home.")
    await expect(report).to_contain_text("Zona 1, by the market")
    caption = report.locator(".part", has_text="His plate is on the photo.")
    await expect(caption.locator("h3")).to_have_text(
        "Account, written with files the defender sent"
    )
    withheld = report.locator(".part .withheld")
    await expect(withheld).to_have_text(
        "Here the defender typed one of their PINs: it was not kept in the report."
    )
    await expect(report).not_to_contain_text('"withheld"')  # no raw JSON
    await expect(report).to_contain_text("Being watched or followed (02010303)")
    await expect(report).to_contain_text("Police")
    await expect(report).to_contain_text("May be shared without name or details")
    evidence = page.locator("[data-kind='report.evidence']")
    await expect(evidence).to_contain_text("door.jpg · image/jpeg")
    await expect(evidence).to_contain_text(hashlib.sha256(photo).hexdigest())
    preview = evidence.locator("img")
    await expect(preview).to_have_attribute("alt", "door.jpg")
    assert await preview.evaluate("img => img.complete && img.naturalWidth") == 64
    async with page.expect_download() as download_info:
        await evidence.get_by_role("link", name="Download the original").click()
    download = await download_info.value
    assert download.suggested_filename == "door.jpg"
    saved = await download.path()
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(photo).hexdigest()
    assert problems == []


async def test_an_evidence_file_the_report_lists_but_the_page_lacks_is_named(
    desk: Desk, site: str, chromium: Browser
) -> None:
    """Whoever holds the database deletes a report's file: the page opened the rest and said
    nothing. The sealed body lists the files as filed; one missing from the page is named."""
    filed = await report_with_photo(desk, desk.a, jpeg_with_gps(), "door.jpg")
    async with transaction(desk.sessions) as s:
        await s.execute(delete(Evidence).where(Evidence.report_id == filed.id))
    page, problems = await page_in(chromium)
    await log_in(page, site, desk.a, "responder")
    await page.goto(f"{site}/reports/{filed.id}")
    await page.get_by_label("Organisation passphrase").fill(PASSPHRASE)
    await page.get_by_role("button", name="Open the sealed items in this browser").click()
    report = page.locator("[data-kind=report]")
    await expect(report).to_contain_text("Two men followed me home.")
    await expect(report.locator("p.refused")).to_have_text(
        "An evidence file this report lists is missing; it may have been deleted."
    )
    assert problems == []


async def test_an_evidence_file_the_report_does_not_list_is_refused_in_the_browser(
    desk: Desk, site: str, chromium: Browser
) -> None:
    """A file sealed to the public key naming the report opened as the defender's, with its
    download link. The report's sealed body lists its files: one it does not list is refused."""
    from tests.api.test_cli_reports_open import plant

    filed = await report_with_photo(desk, desk.a, jpeg_with_gps(), "door.jpg")
    planted = await plant(desk, desk.a, filed.id, b"\xff\xd8\xffplanted")
    page, problems = await page_in(chromium)
    await log_in(page, site, desk.a, "responder")
    await page.goto(f"{site}/reports/{filed.id}")
    await page.get_by_label("Organisation passphrase").fill(PASSPHRASE)
    await page.get_by_role("button", name="Open the sealed items in this browser").click()
    refused = page.locator(f"[data-record='{planted}']")
    await expect(refused).to_have_text(
        "This item belongs to another record; it may have been swapped."
    )
    await expect(refused).to_have_class(re.compile("refused"))
    await expect(page.locator("[data-kind='report.evidence']").first).to_contain_text("door.jpg")
    assert "planted.jpg" not in await page.content()
    assert problems == []


async def test_a_file_name_is_never_trusted_in_the_browser(
    desk: Desk, site: str, chromium: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file sealed with its name as sent (as before core.text.file_name, or by anything else
    with the public key): "statement\u202egpj.exe" must not read "statementexe.jpg"."""
    monkeypatch.setattr(reports, "file_name", lambda name: name)
    name = "statement\u202egpj.exe\u2066\x1b[2J\x00"
    filed = await report_with_photo(desk, desk.a, jpeg_with_gps(), name)
    page, problems = await open_report(chromium, site, desk.a, filed)
    evidence = page.locator("[data-kind='report.evidence']")
    shown = await evidence.locator("p").first.text_content()
    assert shown is not None and shown.startswith("statementgpj.exe[2J · image/jpeg"), shown
    await expect(evidence.locator("img")).to_have_attribute("alt", "statementgpj.exe[2J")
    async with page.expect_download() as download_info:
        await evidence.get_by_role("link", name="Download the original").click()
    download = await download_info.value
    assert "\u202e" not in download.suggested_filename
    assert problems == []


async def test_without_the_script_the_passphrase_form_cannot_be_used(
    desk: Desk, site: str, chromium: Browser
) -> None:
    """A slow link or a blocked script must never turn the form into a GET carrying the
    passphrase in a URL: the form stays hidden and its input has no name."""
    assert desk.a.alert is not None
    async with transaction(desk.sessions) as s:
        row = await s.get(Alert, desk.a.alert.id)
        assert row is not None
        await alert_updates.add_location(
            s, desk.vault, alert=row, latitude=1, longitude=2, now=utcnow()
        )
    page, _problems = await page_in(chromium)
    await page.route("**/static/vendor/**", lambda route: route.abort())
    await log_in(page, site, desk.a, "responder")
    await page.goto(f"{site}/alerts/{desk.a.alert.id}")
    form = page.locator("form.unseal")
    await expect(form).to_be_hidden()
    assert await form.locator("input[type=password]").get_attribute("name") is None


async def test_the_roster_in_arabic_reads_right_to_left_and_changes_duty(
    desk: Desk, site: str, chromium: Browser
) -> None:
    page, problems = await page_in(chromium, locale="ar")
    await log_in(page, site, desk.a, "responder", button="تسجيل الدخول")
    await page.get_by_role("link", name="في المناوبة").click()  # "On duty"
    await expect(page).to_have_url(site + "/roster")
    await expect(page.locator("html")).to_have_attribute("dir", "rtl")
    assert await page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    await expect(page.locator("tr[data-responder=responder-alpha]")).to_be_visible()
    await page.get_by_role("button", name="إنهاء المناوبة").click()  # "Go off duty"
    await expect(page.locator("p.duty")).to_have_text("أنت خارج المناوبة.")
    await expect(page.locator("table.roster")).to_have_count(0)
    async with desk.sessions() as s:
        me = await s.get(Responder, desk.a.responders["responder"].id)
        assert me is not None and not me.on_duty
    assert problems == []


async def test_an_admin_makes_a_new_key_pair_in_the_browser(
    desk: Desk, site: str, chromium: Browser
) -> None:
    """The pair is made and protected in the page; the desk receives only the public key and
    the protected private key, which opens with the new passphrase (as core/sealing.py opens
    it) and matches the public key."""
    page, problems = await page_in(chromium)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.url} {r.post_data or ''}"))
    await log_in(page, site, desk.a, "admin")
    await page.get_by_role("link", name="Keys").click()
    await expect(page.locator("tr[data-version]")).to_have_count(1)
    new = "a new and long organisation passphrase"
    await page.get_by_label("New passphrase").fill(new)
    await page.get_by_label("The same passphrase again").fill(new + "!")
    await page.get_by_role("button", name="Make a new key pair in this browser").click()
    await expect(page.get_by_role("status").last).to_have_text("The two passphrases differ.")
    await page.get_by_label("New passphrase").fill(new)
    await page.get_by_label("The same passphrase again").fill(new)
    await page.get_by_role("button", name="Make a new key pair in this browser").click()
    await expect(page).to_have_url(site + "/keys?notice=key", timeout=30_000)
    await expect(page.locator("tr[data-version]")).to_have_count(2)
    async with desk.sessions() as s:
        org = await s.get(Organisation, desk.a.org.id)
        assert org is not None and org.public_key is not None
        assert org.protected_private_key is not None
        public, protected = org.public_key, org.protected_private_key
    assert public != desk.a.org.public_key
    private = unprotect_private_key(protected, new)
    assert bytes(PrivateKey(private).public_key) == public
    await expect(page.locator("tr[data-version='2']")).to_contain_text(fingerprint(public))
    assert not [r for r in sent if new in r or "new%20and%20long" in r]
    assert problems == []


async def test_a_responder_starts_a_rollcall_and_closes_it_early(
    desk: Desk, site: str, chromium: Browser
) -> None:
    page, problems = await page_in(chromium)
    await log_in(page, site, desk.a, "responder")
    await page.get_by_role("link", name="Broadcasts").click()
    await page.get_by_label("Roll-call message").fill("Raid last night. Check in now.")
    await page.get_by_label("Closes in (minutes)").fill("45")
    await page.get_by_role("button", name="Start the roll-call").click()
    await expect(page.get_by_role("heading", name="Start this roll-call?")).to_be_visible()
    await expect(page.locator("blockquote.text")).to_have_text("Raid last night. Check in now.")
    await page.get_by_role("button", name="Start the roll-call").click()
    await expect(page.get_by_role("status")).to_have_text(
        "The roll-call is sent to every enrolled defender."
    )
    await page.get_by_role("link", name="Back to broadcasts and roll-calls").click()
    row = page.locator("table.rollcalls tbody tr")
    await expect(row).to_have_count(1)
    await expect(row).to_have_attribute("data-open", "yes")
    await expect(row.locator(".text")).to_have_text("Raid last night. Check in now.")
    await row.get_by_role("link").click()
    await page.get_by_role("button", name="Close the roll-call now").click()
    await expect(page.get_by_role("status")).to_contain_text("You closed the roll-call")
    await expect(page.locator("dd.state")).to_have_text("Closed")
    async with desk.sessions() as s:
        (closed,) = (await s.scalars(select(Broadcast))).all()
        assert closed.closed_at is not None and closed.sent_by.startswith("responder:")
    assert problems == []
