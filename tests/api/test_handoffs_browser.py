"""A hand-off walked in a real headless Chromium (both backends): desk A's admin offers a
defender from their page (the browser itself refuses the form until the defender's agreement
is ticked), desk B's admin, on an Arabic page read right to left, finds it under
"Hand-offs" and accepts it."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.api.conftest import Desk
from tests.api.test_dashboard_browser import chromium, log_in, page_in
from tests.api.test_handoffs import newcomer

__all__ = ["chromium"]  # the module's fixture, shared


async def test_a_case_is_offered_and_accepted_in_the_browser(
    desk: Desk, site: str, chromium: Browser
) -> None:
    person = await newcomer(desk, desk.a)
    page, problems = await page_in(chromium)
    await log_in(page, site, desk.a, "admin")
    await page.goto(f"{site}/defenders/{person.id}")
    await page.get_by_label("The desk's exact name").fill("bravo")
    await page.get_by_role("button", name="Offer the case").click()
    await expect(page).to_have_url(f"{site}/defenders/{person.id}")  # not ticked: not sent
    await page.get_by_label("The defender agreed to be followed by that desk").check()
    await page.get_by_role("button", name="Offer the case").click()
    await expect(page.locator("p.notice")).to_have_text(
        "The case is offered. It moves once that desk accepts it."
    )
    await expect(page.locator("p.handoff-waiting")).to_contain_text("Offered to bravo on")

    arabic, trouble = await page_in(chromium, locale="ar")
    await log_in(arabic, site, desk.b, "admin", button="تسجيل الدخول")
    await arabic.get_by_role("link", name="النقل", exact=True).click()  # "Hand-offs"
    await expect(arabic).to_have_url(site + "/handoffs")
    assert await arabic.evaluate("getComputedStyle(document.body).direction") == "rtl"
    row = arabic.locator("section.incoming tr[data-handoff]")
    await expect(row).to_contain_text(person.handle)
    await expect(row).to_contain_text("alpha")
    await row.get_by_role("button", name="قبول الحالة").click()  # "Accept the case"
    await expect(arabic.locator("p.notice")).to_have_text("أصبح هذا الفريق يتابع المدافع/ة الآن.")
    await expect(row).to_have_attribute("data-state", "accepted")
    await expect(row.locator("td.state")).to_contain_text("مقبول")
    assert problems == [] and trouble == []
