"""``amparo broadcast send`` and ``amparo rollcall start|show|close``: the desk's broadcasts and
roll-calls from the server's terminal (when the dashboard is out of reach). The same core
functions as the desk API, in one transaction each; the audit log names the actor "cli".
Defenders appear by handle only, never by an address."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from amparo.command import JsonOpt, emit, fail, with_runtime
from amparo.reports import printable
from amparo.runtime import Runtime
from core import broadcasts, rollcall_closing, rollcalls
from core.accounts import find_org
from core.db import transaction
from core.i18n import operator_gettext as _
from core.i18n import operator_ngettext as ngettext
from core.models import Broadcast, utcnow

ACTOR = "cli"

broadcast_app = typer.Typer(no_args_is_help=True, help="Messages to every enrolled defender.")
rollcall_app = typer.Typer(
    no_args_is_help=True, help="Roll-calls: every enrolled defender answers safe or help."
)

OrgOpt = Annotated[str, typer.Option("--org", help="Organisation name or id.")]
TextArg = Annotated[str, typer.Argument(help="The message, as the defenders will read it.")]
IdArg = Annotated[uuid.UUID, typer.Argument(help="The roll-call's id.")]


def desk_text(text: str) -> str:
    """The message as the API takes it: stripped, 1 to MAX_TEXT characters."""
    text = text.strip()
    if not 1 <= len(text) <= broadcasts.MAX_TEXT:
        message = _("a message has 1 to {max} characters").format(max=broadcasts.MAX_TEXT)
        raise fail(message)
    return text


def iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat(timespec="seconds")


@broadcast_app.command("send")
def broadcast_send(text: TextArg, org: OrgOpt, as_json: JsonOpt = False) -> None:
    """Send a message to every enrolled defender of the organisation, in their language."""
    text = desk_text(text)

    async def body(rt: Runtime) -> dict[str, Any]:
        async with transaction(rt.sessions) as session:
            found = await find_org(session, org)
            sent = await broadcasts.send(
                session, rt.vault, org_id=found.id, text=text, actor=ACTOR, now=utcnow()
            )
            return {"id": str(sent.id), "org": found.name, "recipients": sent.recipients}

    data = with_runtime(body)
    line = ngettext(
        "broadcast {id} queued for {recipients} defender",
        "broadcast {id} queued for {recipients} defenders",
        data["recipients"],
    )
    emit(as_json, data, [line.format(**data)])


@rollcall_app.command("start")
def rollcall_start(
    text: TextArg,
    org: OrgOpt,
    closes_in: Annotated[
        int,
        typer.Option(
            "--closes-in", min=1, max=rollcalls.MAX_MINUTES, help="Minutes until it closes."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Ask every enrolled defender to answer "I'm safe" or "I need help"."""
    text = desk_text(text)

    async def body(rt: Runtime) -> dict[str, Any]:
        async with transaction(rt.sessions) as session:
            found = await find_org(session, org)
            started = await rollcalls.start(
                session,
                rt.vault,
                org_id=found.id,
                text=text,
                closes_in=timedelta(minutes=closes_in),
                actor=ACTOR,
                now=utcnow(),
            )
            return {
                "id": str(started.id),
                "org": found.name,
                "recipients": started.recipients,
                "closes_at": iso(started.closes_at),
            }

    data = with_runtime(body)
    line = ngettext(
        "roll-call {id} sent to {recipients} defender; it closes at {closes_at}",
        "roll-call {id} sent to {recipients} defenders; it closes at {closes_at}",
        data["recipients"],
    )
    emit(as_json, data, [line.format(**data)])


async def _rollcall(rt: Runtime, org: str, rollcall_id: uuid.UUID) -> tuple[Broadcast, str]:
    async with rt.sessions() as session:
        found = await find_org(session, org)
        r = await rollcalls.get(session, found.id, rollcall_id)
    if r is None:  # unknown, a plain broadcast, or another organisation's
        message = _("no roll-call {id} in {org}").format(id=rollcall_id, org=found.name)
        raise fail(message)
    return r, found.name


@rollcall_app.command("show")
def rollcall_show(rollcall_id: IdArg, org: OrgOpt, as_json: JsonOpt = False) -> None:
    """A roll-call's counts and each recipient's answer, by handle."""

    async def body(rt: Runtime) -> dict[str, Any]:
        r, _name = await _rollcall(rt, org, rollcall_id)
        async with rt.sessions() as session:
            tally = await rollcalls.tally(session, r.id)
            lines = await rollcalls.answers(session, r.id)
        return {
            "id": str(r.id),
            "text": r.get_text(rt.vault, "text_enc"),
            "sent_by": r.sent_by,
            "created_at": iso(r.created_at),
            "closes_at": iso(r.closes_at),
            "closed_at": iso(r.closed_at),
            "open": rollcalls.is_open(r, utcnow()),
            "recipients": tally.recipients,
            "safe": tally.safe,
            "help": tally.help,
            "unanswered": tally.unanswered,
            "answers": [
                {"handle": x.handle, "answer": x.answer, "answered_at": iso(x.answered_at)}
                for x in lines
            ],
        }

    data = with_runtime(body)
    state = _("open until {at}") if data["open"] else _("closed at {at}")
    lines = [
        _("roll-call {id}, {state}").format(
            id=data["id"], state=state.format(at=data["closed_at"] or data["closes_at"])
        ),
        printable(data["text"] or ""),  # as typed at the desk: nothing a terminal acts on
        _("{safe} safe, {help} need help, {unanswered} not answered").format(**data),
    ]
    words = {rollcalls.SAFE: _("safe"), rollcalls.HELP: _("needs help")}
    for a in data["answers"]:
        said = words.get(a["answer"], _("not answered"))
        lines.append(
            f"  {a['handle']}: {said}" + (f" ({a['answered_at']})" if a["answer"] else "")
        )
    emit(as_json, data, lines)  # JSON escapes control characters by itself


@rollcall_app.command("close")
def rollcall_close(rollcall_id: IdArg, org: OrgOpt, as_json: JsonOpt = False) -> None:
    """Close a roll-call before its time; later answers are no longer recorded."""

    async def body(rt: Runtime) -> dict[str, Any]:
        r, _name = await _rollcall(rt, org, rollcall_id)
        async with transaction(rt.sessions) as session:
            closed = await rollcall_closing.close(
                session, rt.vault, rollcall_id=r.id, now=utcnow(), actor=ACTOR
            )
            tally = await rollcalls.tally(session, r.id)
        if not closed:
            raise fail(_("roll-call {id} is already closed").format(id=r.id))
        return {
            "id": str(r.id),
            "safe": tally.safe,
            "help": tally.help,
            "unanswered": tally.unanswered,
        }

    data = with_runtime(body)
    line = _("closed roll-call {id}: {safe} safe, {help} need help, {unanswered} not answered")
    emit(as_json, data, [line.format(**data)])
