"""In Arabic (right to left) the fields that hold a URL, a code or a number keep left to
right, in a real headless Chromium (both backends). The webhook URL field's "https://"
placeholder read "//:https", a URL typed into it ran backwards, and so did the login's TOTP
code, a roll-call's minutes and the codes and secrets shown once. And the defenders page
leads by the handle to the defender's own page, and from it to their open alert and back."""

from __future__ import annotations

from playwright.async_api import Browser, Locator, expect

from tests.api.conftest import Desk
from tests.api.test_dashboard_browser import chromium, log_in, page_in

__all__ = ["chromium"]  # the module's fixture, shared


async def direction(element: Locator) -> str:
    return str(await element.evaluate("e => getComputedStyle(e).direction"))


async def test_on_an_arabic_page_urls_codes_and_numbers_are_typed_left_to_right(
    desk: Desk, site: str, chromium: Browser
) -> None:
    page, problems = await page_in(chromium, locale="ar")
    await page.goto(site + "/login")
    assert await direction(page.locator("main")) == "rtl"
    assert await direction(page.locator("input[name=totp]")) == "ltr"
    await log_in(page, site, desk.a, "admin", button="تسجيل الدخول")
    await expect(page.locator("a[href='/audit']")).to_be_visible()  # logged in

    await page.goto(site + "/webhooks")
    url = page.locator("input[name=url]")
    await expect(url).to_have_attribute("placeholder", "https://")
    assert await direction(url) == "ltr"
    await url.fill("https://desk.example/hook")
    assert await direction(page.locator("main")) == "rtl"  # the page itself still is

    await page.goto(site + "/broadcasts")
    assert await direction(page.locator("input[name=minutes]")) == "ltr"

    await page.goto(site + "/defenders")
    invite = page.locator("form[action='/invites'] button")
    await invite.click()
    assert await direction(page.locator("output.invite-code")) == "ltr"

    assert desk.a.defender is not None and desk.a.alert is not None
    await page.locator(f"tr[data-defender='{desk.a.defender.handle}'] a.handle").click()
    await expect(page).to_have_url(f"{site}/defenders/{desk.a.defender.id}")  # their page
    assert await direction(page.locator("main")) == "rtl"
    assert await direction(page.locator("dd.zone span")) == "ltr"  # "America/Bogota"
    await expect(page.locator("h1.handle")).to_have_text(desk.a.defender.handle)
    await page.locator("a.open-alert").click()  # and on to their open alert
    await expect(page).to_have_url(f"{site}/alerts/{desk.a.alert.id}")
    await page.locator("h1 a.defender").click()  # and back by the handle
    await expect(page).to_have_url(f"{site}/defenders/{desk.a.defender.id}")
    await page.locator("form[action$='/pause'] button").click()  # paused, still on the page
    await expect(page).to_have_url(f"{site}/defenders/{desk.a.defender.id}")
    await expect(page.locator("form[action$='/resume'] button")).to_be_visible()
    assert problems == []
