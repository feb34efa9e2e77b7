"""The dashboard's pages: Jinja2 templates translated by Babel, right to left for Arabic."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_datetime
from babel.lists import format_list
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from api import labels
from api.errors import N_, SORRY, locale_of, translated
from core.i18n import RTL, SUPPORTED, gettext, translations
from core.vocabulary import ACT_LABELS, ANSWERS

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

KINDS = {
    "panic": N_("Panic"),
    "duress": N_("Duress"),
    "missed_checkin": N_("Missed check-in"),
    "report": N_("Urgent report"),
    "identity_changed": N_("Safety number changed"),
}
STATES = {
    "triggered": N_("Waiting for a responder"),
    "acknowledged": N_("Acknowledged"),
    "resolved": N_("Resolved"),
}
OUTCOMES = {
    "safe": N_("Safe"),
    "false_alarm": N_("False alarm"),
    "intervention": N_("Intervention"),
    "other": N_("Other"),
}
# What the timeline's events mean to a responder (core writes them; unknown kinds show raw).
EVENTS = {
    "triggered": N_("Alert raised"),
    "step": N_("Escalation step"),
    "acknowledged": N_("Acknowledged"),
    "resolved": N_("Resolved"),
    "reopened": N_("Reopened"),
    "assigned": N_("Assigned"),
    "note_added": N_("Sealed note added"),
    "kept_open": N_("Kept open after the defender's check-in"),
    "missed_again": N_("The defender missed another check-in"),
    "raised_again": N_("The defender raised the alert again"),
    "do_not_contact": N_(
        "Another alert of this defender says not to contact their device: so does this one now"
    ),
    "rollcall_help": N_("The defender answered a roll-call: they need help"),
    "checked_in": N_("The defender checked in"),
    "checked_in_under_duress": N_("The defender checked in with the duress PIN"),
    "cancel_ignored": N_("The defender's cancel was ignored (duress)"),
    "can_talk": N_("The defender says they can talk"),  # when they say no: alert.html
    "location_added": N_("Location received (sealed)"),
    "location_unavailable": N_("The defender could not share a location"),
    "delivery_fallback": N_("Delivery fell back to another channel or contact"),
    "delivery_dead": N_("A message could not be delivered"),
    "recipient_unreachable": N_("A recipient could not be reached"),
    "desk_brought_forward": N_("The desk was alerted early: contacts unreachable"),
}
# Who did it (an alert event's or an audit entry's actor, "kind:id"), when no responder's
# username names them; a kind not listed shows as it is written.
ACTORS = {
    "defender": N_("defender"),  # from their own phone
    "responder": N_("responder"),  # one whose name this organisation does not list
    "token": N_("API token"),
    "engine": N_("escalation engine"),
    "cli": N_("server command line"),
    "chat": N_("responder group chat"),
    "anonymous": N_("someone not logged in"),  # a failed login
}
# Reports: the desk's words for the HURIDOCS fields and the defender's answers.
PRIORITIES = {"urgent": N_("Urgent"), "high": N_("High"), "low": N_("Low")}  # mt46
VERIFICATION = {  # mt41
    "unknown": N_("Not verified"),
    "confirmed": N_("Confirmed"),
    "likely": N_("Likely"),
    "possible": N_("Possible"),
    "unlikely": N_("Unlikely"),
}
REPORT_FIELDS = {
    "type_of_act": N_("Type of act"),
    "initial_date": N_("Date"),
    "perpetrator_type": N_("Perpetrator"),
    "affected": N_("Who was affected"),
    "count": N_("How many people"),
    "consent": N_("Sharing"),
    "priority": N_("Urgency"),
    "language": N_("Language"),
    "text": N_("Account"),
    "correction": N_("Account, corrected by the defender (the earlier words are kept above)"),
    "caption": N_("Account, written with files the defender sent"),
    "place": N_("Place"),
    "location": N_("Location"),
    "withheld": N_("Here the defender typed one of their PINs: it was not kept in the report."),
    "file": N_("File"),
    "download": N_("Download the original"),
    "sha256": N_("SHA-256 on receipt"),
}
REPORT_ANSWERS = {
    "me": N_("The defender"),
    "me_and_others": N_("The defender and others"),
    "others": N_("Other people"),
    "yes": N_("May be shared with partner organisations"),
    "anonymous": N_("May be shared without name or details"),
    "no": N_("Only the desk"),
}
HEALTH = {  # core.desk_defenders.Health.state
    "ok": N_("On time"),
    "overdue": N_("Overdue"),
    "missed": N_("Missed: escalating"),
    "alert": N_("Open alert"),
    "paused": N_("Paused"),
    "hidden": N_("Data deleted under duress: the bot acts as if it does not know them"),
    "no_checkin": N_("No check-in set"),
}
INVITE_STATES = {
    "open": N_("Open"),
    "used": N_("Used"),
    "revoked": N_("Revoked"),
    "expired": N_("Expired"),
}
HANDOFF_STATES = {
    "offered": N_("Waiting for an answer"),
    "accepted": N_("Accepted"),
    "declined": N_("Declined"),
    "withdrawn": N_("Withdrawn"),
}
# Short notices a page may show after a redirect (?notice=…): never free text from the URL.
NOTICES = {
    "acknowledged": N_("You acknowledged the alert."),
    "resolved": N_("You resolved the alert."),
    "not_open": N_("The alert is no longer open."),
    "password": N_("Your password is changed."),
    "forbidden": N_("Your role does not allow this."),
    "note": N_("Your note is sealed to the organisation's key."),
    "no_key": N_("Upload an organisation key first."),
    "assigned": N_("The alert's assignment is saved."),
    "reopened": N_("You reopened the alert: escalation starts again from the desk step."),
    "still_open": N_("Another alert of this kind is open for the defender: see that one."),
}


def when(value: datetime | None, locale: str) -> str:
    """A moment in the responder's language, always in UTC (the desk spans time zones)."""
    if value is None:
        return ""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return format_datetime(value, "medium", tzinfo=UTC, locale=locale) + " UTC"


@cache
def environment(locale: str) -> Environment:
    """One environment per language, built once: its gettext is that catalogue's."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(
        lang=locale,
        dir="rtl" if locale in RTL else "ltr",
        KINDS=KINDS,
        STATES=STATES,
        OUTCOMES=OUTCOMES,
        EVENTS=EVENTS,
        PRIORITIES=PRIORITIES,
        VERIFICATION=VERIFICATION,
        ACT_LABELS=ACT_LABELS,
        HEALTH=HEALTH,
        INVITE_STATES=INVITE_STATES,
        HANDOFF_STATES=HANDOFF_STATES,
        ACTIONS=labels.ACTIONS,
        DETAILS=labels.DETAILS,
        WEBHOOK_EVENTS=labels.WEBHOOK_EVENTS,
    )
    env.filters["when"] = lambda value: when(value, locale)
    env.filters["country"] = lambda code: country(code, locale)
    env.filters["language"] = lambda code: Locale.parse(locale).languages.get(code, code)
    env.filters["weekdays"] = lambda digits: weekdays(digits, locale)
    # Between the items of a short list: ", ", or Arabic's " و" ("and").
    middle = Locale.parse(locale).list_patterns["standard"]["middle"]
    env.globals["LIST_SEP"] = middle.replace("{0}", "").replace("{1}", "")
    say = gettext(locale)
    env.filters["delivery_error"] = lambda raw: labels.delivery_error(raw, say)
    return env


def actor_names(request: Request, names: Mapping[uuid.UUID, str]) -> Callable[[str | None], str]:
    """Who did it, as the desk knows them: a responder's username (``names``), else the kind
    of actor in the responder's language (ACTORS)."""
    say = gettext(locale_of(request))

    def name(actor: str | None) -> str:
        kind, _sep, ident = (actor or "").partition(":")
        if kind == "responder":
            try:
                known = names.get(uuid.UUID(ident))
            except ValueError:
                known = None
            if known:
                return known
        return say(ACTORS[kind]) if kind in ACTORS else kind

    return name


def report_labels(locale: str) -> dict[str, dict[str, str]]:
    """What the browser needs to show an opened report in the responder's language, the
    names of the languages a defender may write in among them (Babel's, not a code)."""
    _ = gettext(locale)
    answers = {**ANSWERS, **REPORT_ANSWERS, **PRIORITIES}
    names = Locale.parse(locale).languages
    return {
        "fields": {k: _(v) for k, v in REPORT_FIELDS.items()},
        "answers": {k: _(v) for k, v in answers.items()},
        "languages": {code: names.get(code, code) for code in SUPPORTED},
    }


def country(code: str | None, locale: str) -> str:
    """A report's country (ISO 3166 alpha-2, flows.setup.country) by its name in the responder's
    language; anything else as it is written."""
    if not code:
        return ""
    if len(code) == 2 and code.isascii() and code.isalpha():
        return str(Locale.parse(locale).territories.get(code.upper(), code))
    return code


def weekdays(digits: str, locale: str) -> str:
    """A regular check-in's days (weekday digits, Monday = 0) named in the responder's
    language: "Every day", or the days' names."""
    if sorted(set(digits)) == list("0123456"):
        return gettext(locale)("Every day")
    names = Locale.parse(locale).days["format"]["wide"]
    days = [str(names[int(c)]) for c in digits if c.isdigit() and int(c) < 7]
    return format_list(days, locale=locale) if days else ""


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    locale = locale_of(request)
    html = environment(locale).get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers={"content-language": locale})


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """A dashboard page's error (api.errors.failed): what happened in a sentence and the way
    back to the queue, in the responder's language; nothing about the error itself. A 404 is
    the page a route answers for an unknown or foreign id; a 500 says sorry, not ``message``.
    The same for anyone: nothing here tells whether the visitor is logged in."""
    if status == 404:
        return render(request, "missing.html", 404, me=None)
    text = translated(request, SORRY if status == 500 else message)
    return render(request, "error.html", status, me=None, message=text[:1].upper() + text[1:])
