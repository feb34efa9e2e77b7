"""The dashboard's reports: the list with its triage fields, and one report whose sealed body,
parts and evidence open in the responder's browser (api/static/unseal.js)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard import PAGE, reader
from api.dashboard_alert import b64
from api.deps import NowDep, SessionDep, VaultDep
from api.errors import locale_of
from api.pages import render, report_labels
from core import desk_defenders, desk_reports
from core.desk_alerts import Cursor, handle_of
from core.models import ReportReview

router = APIRouter(include_in_schema=False)


@router.get("/reports")
async def reports(
    request: Request,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    cursor: str | None = None,
) -> Response:
    """Reports, newest first, with what the server may read of them (triage, review)."""
    who = await reader(request, session, now, "reports:read")
    if isinstance(who, Response):
        return who
    try:
        after = None if cursor is None else Cursor.decode(cursor)
    except ValueError:
        after = None
    rows = await desk_reports.list_reports(
        session,
        org_id=who.principal.org_id,
        before=None if after is None else (after.at, after.id),
        limit=PAGE + 1,
    )
    more = None
    if len(rows) > PAGE:
        rows = rows[:PAGE]
        more = Cursor(rows[-1][0].created_at, rows[-1][0].id).encode()
    items = [
        (
            r,
            handle,
            desk_reports.triage(vault, r),
            desk_reports.review_fields(vault, r, review)["verification"],
        )
        for r, handle, review in rows
    ]
    return render(request, "reports.html", me=who, items=items, more=more)


@router.get("/reports/{report_id}")
async def report(
    report_id: uuid.UUID, request: Request, session: SessionDep, vault: VaultDep, now: NowDep
) -> Response:
    """One report; opening its sealed body and evidence is recorded in the audit log."""
    who = await reader(request, session, now, "reports:read")
    if isinstance(who, Response):
        return who
    found = await desk_reports.get_report(session, who.principal.org_id, report_id)
    if found is None:
        return render(request, "missing.html", 404, me=who)
    actor = who.principal.actor
    await desk_reports.viewed_sealed(session, vault, report=found, actor=actor, now=now)
    files = await desk_reports.evidence(session, found)
    if files:
        await desk_reports.viewed_sealed(
            session, vault, report=found, actor=actor, now=now, action="report.view_evidence"
        )
    review = await session.get(ReportReview, found.id)
    handle = None if found.defender_id is None else await handle_of(session, found.defender_id)
    raised = await desk_reports.alert_of(session, found) if who.may("alerts:read") else None
    return render(
        request,
        "report.html",
        me=who,
        report=found,
        handle=handle,
        linked=found.defender_id is not None
        and await desk_defenders.get_defender(session, found.org_id, found.defender_id)
        is not None,
        raised=raised,
        triage=desk_reports.triage(vault, found),
        verification=desk_reports.review_fields(vault, found, review)["verification"],
        sealed=b64(found.sealed_body),
        files=[(e, b64(e.sealed)) for e in files],
        labels=report_labels(locale_of(request)),
    )
