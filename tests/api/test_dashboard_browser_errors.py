"""The dashboard's error pages in a real headless Chromium (both backends): a form's URL opened
with GET (405) and an unknown page (404) read as a page in the responder's language, not as
the API's JSON in plain text, and their link leads back to the queue; the CSP holds."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from core.i18n import gettext
from tests.api.conftest import Desk
from tests.api.test_dashboard_browser import chromium, log_in, page_in

__all__ = ["chromium"]  # the module's fixture, shared


async def test_an_error_page_reads_as_a_page_and_leads_back_to_the_queue(
    desk: Desk, site: str, chromium: Browser
) -> None:
    assert desk.a.alert is not None
    _ = gettext("es")
    page, problems = await page_in(chromium, locale="es")
    await log_in(page, site, desk.a, "responder", button=_("Log in"))
    await expect(page.locator("section[data-state=triggered]")).to_be_visible()
    answer = await page.goto(f"{site}/alerts/{desk.a.alert.id}/acknowledge")  # a refresh
    assert answer is not None and answer.status == 405
    await expect(page.locator("h1")).to_have_text(_("method not allowed").capitalize())
    await page.get_by_role("link", name=_("Back to the alert queue")).click()
    await expect(page.locator("section[data-state=triggered]")).to_be_visible()
    answer = await page.goto(f"{site}/no-such-page")
    assert answer is not None and answer.status == 404
    await expect(page.locator("h1")).to_have_text(_("Not found"))
    # Chromium reports the page's own status; anything else (a CSP violation, the stylesheet
    # missing) is a problem.
    expected = [
        f"Failed to load resource: the server responded with a status of {n}"
        for n in ("405 (Method Not Allowed)", "404 (Not Found)")
    ]
    assert problems == expected
