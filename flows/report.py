"""An incident report, asked in plain words and coded to HURIDOCS vocabularies (FIELD.md).

    /report --> act (mt4) --> when (mt48; "5/3": when_which, which date of the two written
    out) --> where (text / location / skip) --> who (mt24)
    --> affected (mt7: me / me and others / others --> how many) --> what (free text, several
    messages) --> evidence (photos, documents, voice notes; words typed there are more of the
    account) --> consent to share --> urgency (mt46) --> confirm --> filed: a short receipt
    code; "urgent" also alerts the desk

Free text, places, locations and files are sealed to the organisation's key the moment they
arrive (``core.reports``); the conversation keeps only the sealed parts and the codes.
Nothing of the report is ever shown back (R7): the confirmation names no answers.

A PIN typed alone as an answer (the cancel PIN, or the duress one, which also raises its
silent alert: ``router_alarms.idle_pin``) is never put in the report, where the desk would read it
(``Context.is_a_pin``): a part saying one was withheld takes its place. A count whose number is a
PIN ("1234", "1,234": maybe truly how many people) is left out, and the report says a number
was withheld there (``count_withheld``): the desk, not misled into "no count given", can ask the
defender. On the phone it goes exactly as any other number typed there (R8): the same reply, the
same deletion, the same count of parts toward MAX_PARTS, so that which number is a PIN cannot be
learnt by trying numbers at a report's questions (telling the defender there would tell whoever
holds the phone too).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from core import alerts, reports
from core.media import MAX_BYTES
from core.messages import Choice
from core.models import AlertKind
from core.text import BadText, clean, digits
from flows import country, huridocs, words
from flows.context import END, Context, Retry, bad_text_message
from flows.when import dates, format_day, zone

NAME = "report"
TTL = timedelta(hours=6)
MAX_PARTS = 20
WRITING = ("what", "what_more")  # an edit here corrects the account (``corrected``)
# Files per report (R21: submissions are bounded): a phone's worth of photos, or five at the
# 20 MB limit. Each is sealed into the database, a third larger as base64.
MAX_FILES = 20
MAX_TOTAL_BYTES = 100 * 1024 * 1024
WITHHELD = {"withheld": "pin"}  # what the desk reads where a PIN was typed


async def start(ctx: Context) -> str:
    assert ctx.defender is not None
    try:
        await reports.org_key(ctx.session, ctx.defender.org_id)
    except reports.NoOrgKey:
        ctx.say(ctx._("Reports cannot be received yet. Please reach the desk another way."))
        return END
    ctx.data = {"report": str(uuid.uuid4()), "parts": [], "evidence": 0, "evidence_bytes": 0}
    labels = huridocs.labels(ctx)
    ctx.say(ctx._("Your report goes only to the desk. You can stop at any time with /cancel."))
    ctx.ask(
        ctx._("What happened? Choose the closest."),
        tuple(Choice(k, labels[k]) for k in huridocs.ACTS),
    )
    return "act"


async def act(ctx: Context) -> str:
    ctx.data["act"] = ctx.need_choice(*huridocs.ACTS)
    _ = ctx._
    ctx.ask(
        _("When did it happen? Choose, or send a date like 2024-05-03."),
        (
            Choice("today", _("Today")),
            Choice("yesterday", _("Yesterday")),
            Choice("week", _("This week")),
            Choice("month", _("This month")),
            Choice("unknown", _("Earlier, or I'm not sure")),
        ),
    )
    return "when"


async def when(ctx: Context) -> str:
    today = ctx.now.astimezone(zone(ctx.zone)).date()
    if picked := ctx.choice_or_none(*huridocs.WHEN):
        found, kind = huridocs.WHEN[picked](today)
        return ask_where(ctx, found, kind)
    readings = dates(ctx.need_text(), today=today)
    if not readings:
        raise Retry(ctx._("I couldn't read that date. Send it like 2024-05-03, or choose."))
    if len(readings) > 1:  # "5/3": the 5th of March, or May 3rd? Asked, never guessed
        ctx.ask(
            ctx._("Which date do you mean?"),
            tuple(Choice(f"on:{d.isoformat()}", format_day(d, ctx.locale)) for d in readings),
        )
        return "when_which"
    return ask_where(ctx, readings[0], "exact")


async def when_which(ctx: Context) -> str:
    """One of the two dates offered; anything else is read afresh as the date (``when``)."""
    offered = [key for key, _label in ctx.data.get("_ask", {}).get("choices", [])]
    picked = ctx.choice_or_none(*offered)
    if picked is None:
        return await when(ctx)
    return ask_where(ctx, date.fromisoformat(picked.removeprefix("on:")), "exact")


def ask_where(ctx: Context, found: date | None, kind: str) -> str:
    ctx.data["date"] = found.isoformat() if found else None
    ctx.data["date_type"] = kind
    ctx.ask(
        ctx._("Where did it happen? Write the place (town, area), share a location, or skip."),
        (Choice("skip", ctx._("Skip")),),
        location=True,
    )
    return "where"


async def _seal(ctx: Context, body: dict[str, Any]) -> None:
    assert ctx.defender is not None
    ctx.forget_message()  # taken or refused (over the limit), it does not stay in the chat
    if len(ctx.data["parts"]) >= MAX_PARTS:
        raise Retry(ctx._("That is all we can take in one report. Choose when you are done."))
    if ("text" in body or "place" in body) and await ctx.is_a_pin():
        body = {**WITHHELD, **{k: body[k] for k in ("caption", "correction") if k in body}}
    report_id = uuid.UUID(ctx.data["report"])
    part = await reports.seal_part(
        ctx.session, defender=ctx.defender, report_id=report_id, body=body
    )
    ctx.data["parts"].append(part)


async def where(ctx: Context) -> str:
    spot = ctx.inbound.location
    if spot is not None:
        await _seal(ctx, {"location": {"latitude": spot.latitude, "longitude": spot.longitude}})
    elif ctx.choice_or_none("skip") is None:
        ctx.forget_message()  # a place refused as text (a control character) goes too
        await _seal(ctx, {"place": ctx.need_text()})
    labels = huridocs.labels(ctx)
    ctx.ask(ctx._("Who did it?"), tuple(Choice(k, labels[k]) for k in huridocs.PERPETRATORS))
    return "who"


async def who(ctx: Context) -> str:
    ctx.data["perpetrator"] = ctx.need_choice(*huridocs.PERPETRATORS)
    _ = ctx._
    ctx.ask(
        _("Who was affected?"),
        (
            Choice("me", _("Me")),
            Choice("me_and_others", _("Me and others")),
            Choice("others", _("Other people")),
        ),
    )
    return "affected"


# "Me" as people answer it in a word, whatever the button says ("A mí": "yo").
_ME = frozenset(
    words.label(w)
    for w in ("me", "i", "myself", "yo", "a mi", "mi", "moi", "je", "moi-meme", "eu", "a mim",
              "mim", "أنا", "انا")
)  # fmt: skip


async def affected(ctx: Context) -> str:
    typed = ctx.inbound.text if ctx.inbound.choice is None else None
    if typed is not None and words.label(typed) in _ME:
        ctx.data["affected"] = "me"
    else:
        ctx.data["affected"] = ctx.need_choice("me", "me_and_others", "others")
    if ctx.data["affected"] == "me":
        return ask_what(ctx)
    ctx.ask(
        ctx._("How many people, roughly? Send a number."), (Choice("unsure", ctx._("Not sure")),)
    )
    return "how_many"


async def how_many(ctx: Context) -> str:
    # Telegram's options are buttons, never numbered: a typed "1" is one person, not option 1.
    one = ctx.inbound.channel == "telegram" and digits(ctx.inbound.text or "").strip() == "1"
    if one or ctx.choice_or_none("unsure") is None:
        typed = digits(ctx.need_text()).replace(",", "").replace(".", "").strip()
        # ASCII only: "²" is a digit to isdigit() but not to int(), which would raise.
        if not (typed.isascii() and typed.isdigit()) or not 1 <= int(typed) <= 1_000_000:
            raise Retry(ctx._("Please send a number, like 3."))
        withheld = await ctx.is_a_pin(typed)  # its digits: "1,234" is the PIN 1234 too
        ctx.data["count"] = None if withheld else int(typed)
        ctx.data["count_withheld"] = withheld
    return ask_what(ctx)


def ask_what(ctx: Context) -> str:
    ctx.ask(
        ctx._(
            "Tell us what happened, in your own words. You can send several messages. Don't "
            "include anything you don't want the desk to know."
        ),
        sensitive=True,
    )
    return "what"


async def what(ctx: Context) -> str:
    if not ctx.inbound.attachments:  # a file is asked for later; never deleted unsealed
        ctx.forget_message()  # the account, even refused (a control character)
    await _seal(ctx, {"text": ctx.need_text()})
    ctx.ask(
        ctx._("Received. Send more, or choose when you are done."),
        (Choice("done", ctx._("That's all")),),
        sensitive=True,
    )
    return "what_more"


async def corrected(ctx: Context) -> str:
    """An edited message while the account is being written (R3): the new words are sealed as
    a correction; the earlier ones stay, as sent."""
    ctx.forget_message()  # even refused (a control character)
    await _seal(ctx, {"text": ctx.need_text(), "correction": True})
    ctx.say(ctx._("Received your correction. The first version is kept too."), sensitive=True)
    return "what_more"


async def what_more(ctx: Context) -> str:
    if ctx.choice_or_none("done") is None:
        return await what(ctx)
    return ask_evidence(ctx)


def ask_evidence(ctx: Context) -> str:
    ctx.ask(
        ctx._(
            "Do you have photos, documents or voice notes? Send them now. To keep their "
            "details (date, place), send photos as files. Choose when you are done."
        ),
        (Choice("done", ctx._("Done")), Choice("none", ctx._("I have none"))),
    )
    return "evidence"


async def evidence(ctx: Context) -> str:
    assert ctx.defender is not None
    if not ctx.inbound.attachments:
        # "Do you have photos…?" "no": none. A typed "yes" (or no text: a sticker) is asked
        # again; other words are the defender's, about the incident (``_typed``).
        said = ctx.yes_or_no()
        if said is False or ctx.choice_or_none("done", "none") is not None:
            return ask_consent(ctx)
        if said or ctx.inbound.choice or ctx.inbound.text is None:
            ctx.need_choice("done", "none")
        return await _typed(ctx)
    report_id = uuid.UUID(ctx.data["report"])
    full, files = False, []
    for attachment in ctx.inbound.attachments:
        size = len(attachment.data) if attachment.data is not None else 0
        taken = ctx.data.get("evidence_bytes", 0)  # 0: a report begun before the limit
        if full or ctx.data["evidence"] >= MAX_FILES or taken + size > MAX_TOTAL_BYTES:
            full = True  # checked before sealing; what came before stays
            continue
        row = await reports.add_evidence(
            ctx.session,
            defender=ctx.defender,
            report_id=report_id,
            attachment=attachment,
            now=ctx.now,
        )
        if row is None and attachment.data is None and attachment.size <= MAX_BYTES:
            # Within the limit (or of unknown size), but the channel could not fetch it.
            ctx.say(ctx._("I couldn't receive that file. Please send it again."))
            continue
        if row is None:
            ctx.say(ctx._("I couldn't take that file: the limit is 20 MB."))
            continue
        ctx.data["evidence"] += 1
        ctx.data["evidence_bytes"] = taken + size
        files.append(str(row.id))
    if ctx.inbound.text:  # a caption: the defender's words about these files are kept too
        await _caption(ctx, files)
    if full:
        ctx.say(
            ctx._(
                "One report can hold up to {files} files ({mb} MB in all): I couldn't take the "
                "rest. The files already received are kept."
            ).format(files=MAX_FILES, mb=MAX_TOTAL_BYTES // (1024 * 1024))
        )
    n = ctx.data["evidence"]
    ctx.forget_message()
    ctx.ask(
        ctx.ngettext("{count} file received.", "{count} files received.", n).format(count=n),
        (Choice("done", ctx._("Done")),),
    )
    return "evidence"


async def _typed(ctx: Context) -> str:
    """Words typed instead of a file (a description of the evidence, more of the account):
    sealed as a part of the account and deleted from the chat, like the account itself, even
    refused (a control character, over the limit). Only their sealed form is kept."""
    ctx.forget_message()
    await _seal(ctx, {"text": ctx.need_text()})
    ctx.ask(
        ctx._("Received. Send more, or choose when you are done."),
        (Choice("done", ctx._("Done")),),
        sensitive=True,
    )
    return "evidence"


async def _caption(ctx: Context, files: list[str]) -> None:
    """Sealed as a part of the account, naming the files it came with (none: over a limit)."""
    try:
        text = clean(ctx.inbound.text or "")
    except BadText as bad:
        ctx.say(bad_text_message(ctx, bad.reason))
        return
    if len(ctx.data["parts"]) >= MAX_PARTS:
        ctx.say(ctx._("That is all we can take in one report. Choose when you are done."))
        return
    await _seal(ctx, {"text": text, "caption": files})


def ask_consent(ctx: Context) -> str:
    _ = ctx._
    ctx.ask(
        _("May the desk share this report with partner organisations that can help?"),
        (
            Choice("yes", _("Yes")),
            Choice("anonymous", _("Yes, without my name or details")),
            Choice("no", _("No, only the desk")),
        ),
    )
    return "consent"


async def consent(ctx: Context) -> str:
    ctx.data["consent"] = ctx.need_choice("yes", "anonymous", "no")
    _ = ctx._
    ctx.ask(
        _("How urgent is it?"),
        (
            Choice("urgent", _("I need help now")),
            Choice("soon", _("In the next few days")),
            Choice("record", _("Not urgent, for the record")),
        ),
    )
    return "urgency"


async def urgency(ctx: Context) -> str:
    ctx.data["urgency"] = ctx.need_choice(*huridocs.URGENCY)
    _ = ctx._
    ctx.ask(
        _("Send the report to the desk now?"),
        (Choice("send", _("Send")), Choice("discard", _("Discard it"))),
    )
    return "confirm"


async def confirm(ctx: Context) -> str:
    assert ctx.defender is not None
    if ctx.need_choice("send", "discard") == "discard":
        return await on_cancel(ctx)
    d = ctx.data
    report = await reports.file(
        ctx.session,
        ctx.vault,
        defender=ctx.defender,
        report_id=uuid.UUID(d["report"]),
        triage=huridocs.triage(d, country=country.country(ctx.zone)),
        body=huridocs.body(d, language=ctx.locale),
        now=ctx.now,
    )
    if d["urgency"] == "urgent":
        await alerts.raise_alert(
            ctx.session, ctx.vault, defender=ctx.defender, kind=AlertKind.report, now=ctx.now
        )
    ctx.say(
        ctx._(
            "Sent. Your receipt code is {code}. Give it to the desk if you ask about this report."
        ).format(code=report.receipt_code),
        sensitive=True,
    )
    return END


async def on_cancel(ctx: Context) -> str:
    if "report" in ctx.data:
        await reports.discard(ctx.session, report_id=uuid.UUID(ctx.data["report"]))
    ctx.say(ctx._("Report discarded. Nothing was sent."))
    return END


TRIGGERS = {"/report": "start", "menu:report": "start"}
STATES = {
    "start": start,
    "act": act,
    "when": when,
    "when_which": when_which,
    "where": where,
    "who": who,
    "affected": affected,
    "how_many": how_many,
    "what": what,
    "what_more": what_more,
    "evidence": evidence,
    "consent": consent,
    "urgency": urgency,
    "confirm": confirm,
}
