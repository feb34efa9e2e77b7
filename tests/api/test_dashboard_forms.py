"""The dashboard's forms (both backends): the new password is typed twice, and a mismatch
changes nothing, said in the responder's language (a slip of the finger used to become the
new password, and lock its owner out); the fields that hold a URL, a code or a number are
left to right on a right-to-left page (the webhook URL's "https://" read "//:https")."""

from __future__ import annotations

import html
import re

from core.i18n import SUPPORTED, gettext
from core.models import Responder
from tests.api.conftest import PASSWORD, Desk
from tests.api.test_dashboard import browser

MISMATCH = "the two new passwords do not match: type the same one twice"


async def test_the_new_password_is_typed_twice_and_a_mismatch_changes_nothing(
    desk: Desk,
) -> None:
    me = desk.a.responders["responder"]
    async with browser(desk, desk.a, "responder") as (c, csrf):
        for lang in SUPPORTED:
            _ = gettext(lang)
            c.headers["accept-language"] = lang
            form = (await c.get("/password")).text
            assert re.search(r'<input name="again" type="password" required', form)
            assert html.escape(_("Repeat the new password")) in form
            answer = await c.post(
                "/password",
                data={
                    "csrf": csrf,
                    "current": PASSWORD,
                    "new": "a brand new passphrase",
                    "again": "a brand new passphrase!",
                },
            )
            assert answer.status_code == 400, lang
            assert html.escape(_(MISMATCH)) in answer.text, lang
            if lang != "en":
                assert _(MISMATCH) != MISMATCH and _("Repeat the new password") != (
                    "Repeat the new password"
                ), lang
        assert (await c.get("/")).status_code == 200  # the session still stands
    async with desk.sessions() as s:
        row = await s.get(Responder, me.id)
        assert row is not None and row.password_hash == me.password_hash  # unchanged


async def test_url_code_and_number_fields_are_left_to_right_on_an_arabic_page(
    desk: Desk,
) -> None:
    ar = {"accept-language": "ar"}
    async with desk.anonymous() as c:
        login = (await c.get("/login", headers=ar)).text
    assert 'dir="rtl"' in login and '<input name="totp" dir="ltr"' in login
    async with browser(desk, desk.a, "admin") as (c, csrf):
        hooks = (await c.get("/webhooks", headers=ar)).text
        assert '<input type="url" name="url" dir="ltr"' in hooks
        casts = (await c.get("/broadcasts", headers=ar)).text
        assert '<input type="number" name="minutes" dir="ltr"' in casts
        made = await c.post("/invites", data={"csrf": csrf, "days": "7"}, headers=ar)
        if made.status_code == 303:
            made = await c.get(made.headers["location"], headers=ar)
        assert '<output class="invite-code" dir="ltr">' in made.text
