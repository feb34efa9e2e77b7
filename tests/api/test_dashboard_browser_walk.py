"""What a responder walking the dashboard in a real headless Chromium (both backends) must not
be misled by: a defender's "I can't talk" read as "they can talk"."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from core import actions
from core.db import transaction
from core.models import utcnow
from tests.api.conftest import Desk
from tests.api.test_dashboard_browser import chromium, log_in, page_in

__all__ = ["chromium"]  # the module's fixture, shared


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
