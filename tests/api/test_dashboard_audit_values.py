"""The audit page words the known values of an entry's details and says what its target is
(both backends). It showed "Rol: observer", "Motivo: totp_reused", "Resultado: false_alarm"
in a Spanish page, and every target as a bare id: an admin could not tell which alert, report
or responder an entry was about without querying the database. Now a known value shows in the
responder's language with the raw one beside it (data-raw); a target that is one of the
organisation's alerts, reports or roll-calls links to its page, a responder's or a defender's
shows their name; anything unknown (or another organisation's) stays as written. The trail
itself is unchanged: /api/v1/audit still gives the raw values."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

from babel import Locale
from sqlalchemy import select

from core import audit
from core.db import transaction
from core.i18n import SUPPORTED, gettext
from core.models import ApiToken, Webhook
from tests.api.conftest import Desk
from tests.api.test_dashboard import browser


def entry(page: str, action: str) -> str:
    """The row of the (newest) entry of ``action``."""
    row = page[page.index(f'data-action="{action}"') :]
    return row[: row.index("</tr>")]


def values(row: str) -> dict[str, tuple[str, str]]:
    """Each detail shown as a word: key -> (word, raw value)."""
    found = re.findall(
        r'data-key="([a-z_]+)">[^<]*<span class="value" data-raw="([^"]*)">([^<]*)</span>', row
    )
    return {key: (html.unescape(word), html.unescape(raw)) for key, raw, word in found}


def target_cell(row: str) -> str:
    return row[row.index('<td class="hash">') :]


async def test_the_audit_page_words_known_values_and_names_its_targets(desk: Desk) -> None:
    a, b = desk.a, desk.b
    assert a.alert and a.report and a.defender and b.alert
    observer, admin = a.responders["observer"], a.responders["admin"]
    written: list[tuple[str, str | None, dict[str, Any]]] = [
        ("responder.role", str(observer.id), {"from": "responder", "to": "observer"}),
        ("responder.create", str(observer.id), {"role": "observer"}),
        ("auth.login_failed", str(observer.id), {"reason": "totp_reused"}),
        ("alert.resolve", str(a.alert.id), {"outcome": "false_alarm"}),
        ("alert.assign", str(a.alert.id), {"to": str(observer.id)}),
        ("report.view_sealed", str(a.report.id), {}),
        ("responder.chat_link", str(admin.id), {"channel": "telegram"}),
        ("desk_group.language", None, {"language": "fr"}),
        ("defender.pause", str(a.defender.id), {}),
        ("alert.view", str(b.alert.id), {}),  # another organisation's id: never looked up
        ("auth.logout", "not-an-id", {"reason": "brand_new"}),  # unknown: as written
    ]
    async with transaction(desk.sessions) as s:
        for action, target, detail in written:
            await audit.record(
                s,
                desk.vault,
                actor=f"responder:{admin.id}",
                action=action,
                target=target,
                detail=detail,
                org_id=a.org.id,
            )
    async with browser(desk, a, "admin") as (c, _csrf):
        for lang in SUPPORTED:
            _ = gettext(lang)
            page = (await c.get("/audit", headers={"accept-language": lang})).text
            role = entry(page, "responder.role")
            assert values(role) == {
                "from": (_("Responder"), "responder"),
                "to": (_("Observer"), "observer"),
            }, lang
            assert f'title="{observer.id}">{observer.username}</span>' in target_cell(role)
            assert values(entry(page, "responder.create")) == {"role": (_("Observer"), "observer")}
            failed = entry(page, "auth.login_failed")
            assert values(failed) == {
                "reason": (_("Two-factor code already used"), "totp_reused")
            }, lang
            assert values(entry(page, "alert.resolve")) == {
                "outcome": (_("False alarm"), "false_alarm")
            }
            resolved = target_cell(entry(page, "alert.resolve"))
            assert f'<a class="target" href="/alerts/{a.alert.id}"' in resolved, lang
            assert html.escape(f"{_('Panic')} · {a.defender.handle}") in resolved
            assert values(entry(page, "alert.assign")) == {
                "to": (observer.username, str(observer.id))
            }
            report = target_cell(entry(page, "report.view_sealed"))
            assert f'href="/reports/{a.report.id}"' in report
            assert f">{a.report.receipt_code}</a>" in report
            assert values(entry(page, "responder.chat_link")) == {
                "channel": ("Telegram", "telegram")
            }
            french = str(Locale.parse(lang).languages["fr"])
            assert values(entry(page, "desk_group.language")) == {"language": (french, "fr")}
            paused = target_cell(entry(page, "defender.pause"))  # the defender's own page
            assert f'href="/defenders/{a.defender.id}"' in paused
            assert f">{a.defender.handle}</a>" in paused
            foreign = target_cell(entry(page, "alert.view"))
            assert "<a " not in foreign and str(b.alert.id) in foreign
            assert b.defender is not None and b.defender.handle not in page
            odd = entry(page, "auth.logout")
            assert values(odd) == {} and "brand_new" in odd and "not-an-id" in odd
            if lang != "en":  # words of the language, not the English
                for english in ("Observer", "Two-factor code already used", "False alarm"):
                    assert _(english) != english, (lang, english)
        # The trail keeps what was written.
        raw = (await c.get("/api/v1/audit", params={"limit": 50})).json()["items"]
    kept = {e["action"]: e for e in raw}
    assert kept["auth.login_failed"]["detail"] == {"reason": "totp_reused"}
    assert kept["alert.resolve"]["target"] == str(a.alert.id)
    assert kept["responder.role"]["detail"] == {"from": "responder", "to": "observer"}
    assert uuid.UUID(kept["alert.view"]["target"]) == b.alert.id


async def test_tokens_webhooks_invites_and_the_organisation_are_named_not_ids(
    desk: Desk,
) -> None:
    """Review: an API token, a webhook endpoint, an invite code and the organisation showed as
    bare ids. A token by its name, an endpoint by its host (linked to the webhooks page; never
    the path, which may carry the receiver's secret), an invite as "Invite code", the
    organisation by its name; another organisation's stay ids."""
    a, b = desk.a, desk.b
    assert a.webhook and a.invite and b.webhook
    admin = a.responders["admin"]
    async with transaction(desk.sessions) as s:
        token = await s.scalar(select(ApiToken.id).where(ApiToken.org_id == a.org.id))
        hook = await s.get(Webhook, a.webhook.id)
        assert hook is not None
        hook.url = "https://cases.example.org/in/s3cret-path?key=k3y"
        for action, target in (
            ("token.create", token),
            ("webhook.rotate", a.webhook.id),
            ("invite.create", a.invite.id),
            ("org.key_change", a.org.id),
            ("webhook.add", b.webhook.id),  # another organisation's: never looked up
        ):
            await audit.record(
                s, desk.vault, actor=f"responder:{admin.id}", action=action,
                target=str(target), org_id=a.org.id,
            )  # fmt: skip
    async with browser(desk, a, "admin") as (c, _csrf):
        page = (await c.get("/audit", headers={"accept-language": "es"})).text
    assert f'title="{token}">case system</span>' in target_cell(entry(page, "token.create"))
    rotated = target_cell(entry(page, "webhook.rotate"))
    assert f'href="/webhooks" title="{a.webhook.id}">cases.example.org</a>' in rotated
    assert "s3cret" not in page and "k3y" not in page
    invite = target_cell(entry(page, "invite.create"))
    assert f'title="{a.invite.id}">Código de invitación</span>' in invite
    named = target_cell(entry(page, "org.key_change"))
    assert f'title="{a.org.id}">{html.escape(a.org.name)}</span>' in named
    foreign = target_cell(entry(page, "webhook.add"))
    assert str(b.webhook.id) in foreign and "<a " not in foreign
