"""Who did it, on the dashboard's pages, in the responder's language (both backends): the audit
log's "Who", the broadcasts' and roll-calls' "Sent by", an alert's timeline. A responder's
username shows as it is; every other actor showed its raw English kind ("defender", "engine",
"cli", "token", "chat", "anonymous", "responder") on a page otherwise in Spanish or Arabic."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta

from core import actions, audit, broadcasts, rollcalls
from core.db import transaction
from core.i18n import gettext
from core.models import Alert
from tests.api.conftest import Desk
from tests.api.test_dashboard import browser

LANGUAGES = ("en", "es", "fr", "pt", "ar")
# Each kind of actor the server writes, and the words a responder reads for it.
ACTORS = {
    "defender": "defender",
    f"token:{uuid.uuid4()}": "API token",
    "engine": "escalation engine",
    "cli": "server command line",
    "chat": "responder group chat",
    "anonymous": "someone not logged in",
    f"responder:{uuid.uuid4()}": "responder",  # not one of this organisation's
}
AUDIT_ROW = re.compile(
    r'data-action="test\.actor">\s*<td>\d+</td>\s*<td>[^<]*</td>\s*<td>([^<]*)</td>\s*'
    r'<td><code>[^<]*</code></td>\s*<td class="hash">([^<]*)</td>'
)


def expected(lang: str) -> dict[str, str]:
    _ = gettext(lang)
    return {actor: _(words) for actor, words in ACTORS.items()}


async def test_the_audit_log_names_every_kind_of_actor_in_the_responders_language(
    desk: Desk,
) -> None:
    async with transaction(desk.sessions) as s:
        for actor in ACTORS:
            await audit.record(
                s, desk.vault, actor=actor, action="test.actor", target=actor, org_id=desk.a.org.id
            )
    admin = desk.a.responders["admin"].username
    async with browser(desk, desk.a, "admin") as (c, _csrf):
        for lang in LANGUAGES:
            page = await c.get("/audit", headers={"accept-language": lang})
            assert page.status_code == 200
            shown = {target: html.unescape(who) for who, target in AUDIT_ROW.findall(page.text)}
            assert shown == expected(lang), lang
            assert f"<td>{admin}</td>" in page.text  # a responder: their username
            if lang != "en":
                assert all(shown[a] != words for a, words in ACTORS.items()), lang
                assert "<td>defender</td>" not in page.text


async def test_broadcasts_and_roll_calls_name_who_sent_them_in_the_responders_language(
    desk: Desk,
) -> None:
    now = datetime.now(UTC)
    sent: dict[uuid.UUID, str] = {}
    calls: dict[uuid.UUID, str] = {}
    async with transaction(desk.sessions) as s:
        for actor in ("cli", next(a for a in ACTORS if a.startswith("token:"))):
            b = await broadcasts.send(
                s, desk.vault, org_id=desk.a.org.id, text="hello", actor=actor, now=now
            )
            r = await rollcalls.start(
                s,
                desk.vault,
                org_id=desk.a.org.id,
                text="check in",
                closes_in=timedelta(minutes=30),
                actor=actor,
                now=now,
            )
            sent[b.id] = sent[r.id] = calls[r.id] = actor
    async with browser(desk, desk.a, "observer") as (c, _csrf):
        for lang in ("es", "ar"):
            c.headers["accept-language"] = lang
            page = (await c.get("/broadcasts")).text
            words = expected(lang)
            for item, actor in sent.items():
                row = re.search(
                    rf'data-(?:broadcast|rollcall)="{item}"[^>]*>\s*<td>.*?</td>\s*'
                    r'<td class="text" dir="auto">[^<]*</td>\s*<td>([^<]*)</td>',
                    page,
                )
                assert row is not None and html.unescape(row.group(1)) == words[actor], lang
            for rollcall, actor in calls.items():  # a roll-call's own page
                one = (await c.get(f"/rollcalls/{rollcall}")).text
                by = re.search(r'dir="auto">[^<]*</dd>\s*<dt>[^<]*</dt><dd>([^<]*)</dd>', one)
                assert by is not None and html.unescape(by.group(1)) == words[actor], lang
            assert ">cli<" not in page and ">token<" not in page


async def test_an_alerts_timeline_names_the_engine_and_tokens_in_the_responders_language(
    desk: Desk,
) -> None:
    assert desk.a.alert is not None
    now = datetime.now(UTC)
    async with transaction(desk.sessions) as s:
        alert = await s.get(Alert, desk.a.alert.id)
        assert alert is not None
        s.add(actions.event(alert, "step", now, actor="engine", step=1))
        token = next(a for a in ACTORS if a.startswith("token:"))
        s.add(actions.event(alert, "assigned", now + timedelta(seconds=1), actor=token))
    async with browser(desk, desk.a, "observer") as (c, _csrf):
        page = (await c.get(f"/alerts/{alert.id}", headers={"accept-language": "es"})).text
    who = {
        kind: html.unescape(actor)
        for kind, actor in re.findall(
            r'data-event="(step|assigned)">.*?<span class="actor">([^<]*)</span>', page
        )
    }
    assert who == {"step": expected("es")["engine"], "assigned": expected("es")[token]}
