"""The audit log's actions and details, and a webhook delivery's error, in the responder's
language (both backends). The audit page showed each entry's action as its raw English
identifier ("alert.view", "auth.login_failed") and its details as raw "key=value"; the
webhooks page showed a delivery's error class raw ("webhook HTTP 503"): English on a page
otherwise in Spanish or Arabic. The identifiers stay beside the words (admins match them with
/api/v1/audit, which keeps them unchanged); one the labels do not know shows as it is."""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path

from api import labels
from core import audit, webhook_events
from core.db import transaction
from core.i18n import gettext
from tests.api.conftest import Desk
from tests.api.test_dashboard import browser

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "api", "amparo", "flows", "bot")
ACTION = re.compile(r"[a-z][a-z_]*\.[a-z][a-z_]*")
FUTURE = "test.not_yet_labelled"


def row(page: str, action: str) -> list[str]:
    """The action cells of the rows of ``action``."""
    return re.findall(
        rf'data-action="{re.escape(action)}">\s*<td>\d+</td>\s*<td>[^<]*</td>\s*<td>[^<]*</td>'
        r'\s*<td>(.*?)</td>\s*<td class="hash">',
        page,
    )


async def test_the_audit_log_shows_every_action_in_the_responders_language(desk: Desk) -> None:
    async with transaction(desk.sessions) as s:
        for action in [*labels.ACTIONS, FUTURE]:
            await audit.record(s, desk.vault, actor="cli", action=action, org_id=desk.a.org.id)
    async with browser(desk, desk.a, "admin") as (c, _csrf):
        for lang in ("en", "es", "ar"):
            page = await c.get("/audit", headers={"accept-language": lang})
            assert page.status_code == 200
            _ = gettext(lang)
            for action, words in labels.ACTIONS.items():
                cells = row(page.text, action)
                assert cells, action
                label = re.fullmatch(
                    r'<span class="action">([^<]*)</span> '
                    rf'<small><code class="raw" dir="ltr">{re.escape(action)}</code></small>',
                    cells[0],
                )
                assert label is not None, (lang, cells[0])
                shown = html.unescape(label.group(1))
                assert shown == _(words) and shown != action, (lang, action)
                if lang != "en":
                    assert shown != words, (lang, action)  # translated, not the English
            # One the labels do not know (a newer server's) shows as it is written.
            assert row(page.text, FUTURE) == [f"<code>{FUTURE}</code>"]


def named(lang: str, words: str) -> str:
    """A detail's name as the page shows it: "Motivo:" in Spanish, "Motif :" in French."""
    _ = gettext(lang)
    return _("%(name)s:") % {"name": _(words)}


async def test_the_audit_log_names_known_detail_keys_and_words_their_known_values(
    desk: Desk,
) -> None:
    detail = {"reason": "password", "fields": ["place", "priority"], "to": None, "odd_key": 3}
    async with transaction(desk.sessions) as s:
        await audit.record(
            s,
            desk.vault,
            actor="anonymous",
            action="auth.login_failed",
            detail=detail,
            org_id=desk.a.org.id,
        )
        await audit.record(
            s,
            desk.vault,
            actor="cli",
            action="alert.assign",
            detail={"to": "r-1"},
            org_id=desk.a.org.id,
        )
    async with browser(desk, desk.a, "admin") as (c, _csrf):
        for lang in ("es", "fr", "ar"):
            page = (await c.get("/audit", headers={"accept-language": lang})).text
            _ = gettext(lang)
            failed = page[page.index('data-action="auth.login_failed"') :]
            failed = failed[: failed.index("</tr>")]
            shown = re.findall(
                r'<span class="detail" data-key="([a-z_]+)">([^<]*) '
                r'(?:<span class="value" data-raw="([^"]*)">|<code[^>]*>)([^<]*)</',
                failed,
            )
            got = {k: (html.unescape(n), html.unescape(v), r) for k, n, r, v in shown}
            assert got == {  # a known value in words, the raw one beside it (api/audit_view.py)
                "reason": (named(lang, "Reason"), _("Wrong password"), "password"),
                "fields": (
                    named(lang, "Fields"),
                    f"{_('Place')}, {_('Urgency')}",
                    "place, priority",
                ),
                "to": (named(lang, "After"), "—", ""),  # no words for this action's "to"
            }, lang
            assert _("Reason") != "Reason" and "reason=" not in failed
            assert "<code>odd_key=3</code>" in failed  # a key not listed: as it is written
            assigned = page[page.index('data-action="alert.assign"') :]
            assigned = assigned[: assigned.index("</tr>")]
            assert f"{html.escape(named(lang, 'Assigned to'))} <code" in assigned, lang


def written_actions() -> dict[str, set[str]]:
    """Each audit action the source writes, and where: a string literal given as ``action=``
    (in whatever expression: ``"a" if x else "b"``), as the default of a parameter named
    ``action``, assigned to a variable named ``action`` (tuple unpacking too), iterated into
    one (``for action, field in ((...), ...)``, a comprehension's too), or passed by position
    to a function that takes ``action`` (api.routes.webhooks._audit). Not seen: an action put
    together at run time (an f-string, a concatenation) or read from elsewhere (a dict,
    another module's constant): write them as literals, as every call does today."""
    trees = {
        path: ast.parse(path.read_text(), str(path))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    takes_action: dict[str, int] = {}  # a function's name: where ``action`` is positionally
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [a.arg for a in node.args.posonlyargs + node.args.args]
                if "action" in names:
                    takes_action[node.name] = names.index("action")
    found: dict[str, set[str]] = {}

    def take(expr: ast.AST | None, path: Path) -> None:
        for node in ast.walk(expr) if expr is not None else ():
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ACTION.fullmatch(node.value):
                    found.setdefault(node.value, set()).add(str(path.relative_to(ROOT)))

    def named_action(target: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id == "action" for n in ast.walk(target))

    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "action":
                        take(keyword.value, path)
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                at = takes_action.get(name)
                if at is not None and at < len(node.args):
                    take(node.args[at], path)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(
                    zip(
                        positional[len(positional) - len(args.defaults) :],
                        args.defaults,
                        strict=True,
                    )
                )
                pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
                for arg, default in pairs:
                    if arg.arg == "action":
                        take(default, path)
            elif isinstance(node, ast.Assign) and any(named_action(t) for t in node.targets):
                take(node.value, path)
            elif isinstance(node, ast.For | ast.comprehension) and named_action(node.target):
                take(node.iter, path)
    return found


def test_every_audit_action_the_code_writes_has_words_on_the_audit_page() -> None:
    found = written_actions()
    # The scan itself still sees each way the code writes one (else it would pass by seeing
    # nothing): a plain keyword, a conditional, a parameter's default, tuple unpacking, a
    # loop, a helper taking it by position, the command line.
    for action in (
        "alert.view",
        "defender.resume",
        "report.view_sealed",
        "desk_group.link_code",
        "responder.role",
        "webhook.replay",
        "keys.rotate",
    ):
        assert action in found, action
    assert len(found) >= 50
    missing = {action: where for action, where in found.items() if action not in labels.ACTIONS}
    assert missing == {}, "give these audit actions words in api/labels.py ACTIONS"


def test_every_webhook_event_and_delivery_error_class_has_words() -> None:
    assert set(labels.WEBHOOK_EVENTS) == set(webhook_events.EVENTS)
    say = gettext("es")
    for raw in (
        "webhook HTTP 503",
        "webhook HTTP 301",
        "webhook TimeoutError",
        "webhook ClientConnectorError",
        "webhook ServerDisconnectedError",
        "TimeoutError",
        "webhook not a public address",
        "no payload",
        "paused",
        "webhook_gone",
        "withdrawn",
    ):
        words = labels.delivery_error(raw, say)
        assert words and words != raw, raw
    assert labels.delivery_error("webhook HTTP 503", say) == (
        "El destino respondió con el código HTTP 503"
    )
    for unknown in (None, "", "RuntimeError", "something new"):
        assert labels.delivery_error(unknown, say) is None


async def test_the_webhooks_page_says_a_deliverys_error_and_event_in_the_responders_language(
    desk: Desk,
) -> None:
    assert desk.a.dead is not None and desk.a.dead.last_error == "webhook HTTP 503"
    async with browser(desk, desk.a, "admin") as (c, _csrf):
        for lang in ("es", "ar"):
            page = (await c.get("/webhooks", headers={"accept-language": lang})).text
            _ = gettext(lang)
            dead = page[page.index(f'data-delivery="{desk.a.dead.id}"') :]
            dead = dead[: dead.index("</tr>")]
            said = _("The endpoint answered with HTTP status %(status)s") % {"status": "503"}
            assert said != "The endpoint answered with HTTP status 503"
            assert (
                f'<span class="error-class">{html.escape(said)}</span> '
                '<small><code class="raw" dir="ltr">webhook HTTP 503</code></small>'
            ) in dead, lang
            event = _(labels.WEBHOOK_EVENTS["alert.triggered"])
            assert event != labels.WEBHOOK_EVENTS["alert.triggered"]
            assert (
                f'<code dir="ltr">alert.triggered</code> <span class="event">'
                f"{html.escape(event)}</span>"
            ) in dead, lang
