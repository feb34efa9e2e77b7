"""The desk's side of reports: triage fields, the sealed body, the desk's review, exports.

The body stays sealed end to end: the desk downloads the sealed box and opens it with the
organisation key on its own machine. Exports carry HURIDOCS codes and the sealed body as it is.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.claims import locked, write_lock
from core.crypto import CryptoError, Vault
from core.models import Alert, AlertKind, Defender, Evidence, Report, ReportReview

SEALED_KIND = "report"
EVIDENCE_KIND = "report.evidence"
EXPORT_LIMIT = 10_000
# Reports read, decrypted and serialised between two turns of the event loop. In `amparo
# serve` that loop also runs the escalation engine and the bots: 10,000 reports in one go held
# it for 0.8-0.9 s; a page of 100 holds it for about 10 ms.
EXPORT_PAGE = 100
VERIFICATION = ("unknown", "confirmed", "likely", "possible", "unlikely")  # HURIDOCS mt41
INTERVENTION_TYPES = (  # HURIDOCS mt20
    "financial_assistance",
    "legal_aid",
    "medical_aid",
    "publicity",
    "confidential_contacts",
    "request_to_others",
    "demand_for_investigation",
    "petition",
    "other",
)
INTERVENTION_STATUS = (  # HURIDOCS mt45
    "not_started",
    "some_action_continuing",
    "significant_action_continuing",
    "closed",
)
CSV_COLUMNS = (
    "id",
    "receipt_code",
    "received_at",
    "defender_handle",
    "type_of_act",
    "initial_date",
    "initial_date_type",
    "country",
    "urgency",
    "violation_status",
    "confirmed_act_codes",
    "intervention_type",
    "intervention_status",
    "sealed_body",
)
TRIAGE_KEYS = ("type_of_act", "urgency", "country", "initial_date", "initial_date_type")
REVIEW_KEYS = ("verification", "act_codes", "intervention_type", "intervention_status")
UNREVIEWED: dict[str, Any] = {
    "verification": "unknown",
    "act_codes": [],
    "intervention_type": None,
    "intervention_status": None,
}


def triage(vault: Vault, report: Report) -> dict[str, Any]:
    """The triage fields the server may use; an unreadable record shows none, never fails."""
    try:
        raw = report.get_text(vault, "triage_enc")
        data = json.loads(raw) if raw else {}
    except (CryptoError, ValueError):
        return {}
    return {k: data.get(k) for k in TRIAGE_KEYS if k in data} if isinstance(data, dict) else {}


def review_fields(vault: Vault, report: Report, rv: ReportReview | None) -> dict[str, Any]:
    """The desk's review: encrypted with the report's key (``review_enc``); a review written
    before that is read from its old clear columns until it is next changed."""
    fields = dict(UNREVIEWED)
    try:
        raw = report.get_text(vault, "review_enc")
        data = json.loads(raw) if raw else None
    except (CryptoError, ValueError):
        return fields  # unreadable: shown unreviewed, never a failure
    if isinstance(data, dict):
        fields.update({k: data[k] for k in REVIEW_KEYS if k in data})
    elif rv is not None:
        fields.update({k: getattr(rv, k) for k in REVIEW_KEYS})
    fields["act_codes"] = list(fields["act_codes"] or [])
    return fields


Listed = tuple[Report, str | None, ReportReview | None]


async def list_reports(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Listed]:
    """Newest first: (report, defender handle, review); limit + 1 rows tell of a next page."""
    query = (
        select(Report, Defender.handle, ReportReview)
        .outerjoin(Defender, Defender.id == Report.defender_id)
        .outerjoin(ReportReview, ReportReview.report_id == Report.id)
        .where(Report.org_id == org_id)
    )
    if before is not None:
        at, row_id = before
        query = query.where(
            (Report.created_at < at) | ((Report.created_at == at) & (Report.id < row_id))
        )
    query = query.order_by(Report.created_at.desc(), Report.id.desc()).limit(limit)
    return [(r, h, v) for r, h, v in (await session.execute(query)).all()]


async def filed_between(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    defender_id: uuid.UUID,
    start: datetime,
    end: datetime | None,
    limit: int = 20,
) -> list[tuple[uuid.UUID, str, datetime]]:
    """The defender's reports filed from ``start`` (an urgent report's alert is raised with
    it, at the same moment) until ``end`` (None: still open), oldest first: (id, receipt
    code, filed at). An urgent report while that alert is open is folded into it."""
    query = select(Report.id, Report.receipt_code, Report.created_at).where(
        Report.org_id == org_id, Report.defender_id == defender_id, Report.created_at >= start
    )
    if end is not None:
        query = query.where(Report.created_at <= end)
    query = query.order_by(Report.created_at, Report.id).limit(limit)
    return [(i, code, at) for i, code, at in (await session.execute(query)).all()]


async def alert_of(session: AsyncSession, report: Report) -> Alert | None:
    """The urgent-report alert a report belongs to: the defender's one raised with it, or open
    when it was filed (it was folded into that one): ``filed_between``'s other way."""
    if report.defender_id is None:
        return None
    query = (
        select(Alert)
        .where(
            Alert.org_id == report.org_id,
            Alert.defender_id == report.defender_id,
            Alert.kind == AlertKind.report,
            Alert.triggered_at <= report.created_at,
            or_(Alert.resolved_at.is_(None), Alert.resolved_at >= report.created_at),
        )
        .order_by(Alert.triggered_at.desc(), Alert.id)
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def get_report(
    session: AsyncSession, org_id: uuid.UUID, report_id: uuid.UUID
) -> Report | None:
    query = select(Report).where(Report.id == report_id, Report.org_id == org_id)
    return (await session.execute(query)).scalar_one_or_none()


async def evidence(session: AsyncSession, report: Report) -> list[Evidence]:
    """The report's filed evidence files, each sealed on its own (kind ``report.evidence``)."""
    query = (
        select(Evidence)
        .where(
            Evidence.report_id == report.id,
            Evidence.org_id == report.org_id,
            Evidence.filed_at.is_not(None),
        )
        .order_by(Evidence.created_at)
    )
    return list((await session.execute(query)).scalars())


async def viewed_sealed(
    session: AsyncSession,
    vault: Vault,
    *,
    report: Report,
    actor: str,
    now: datetime,
    action: str = "report.view_sealed",
) -> None:
    await audit.record(
        session,
        vault,
        actor=actor,
        action=action,
        target=str(report.id),
        org_id=report.org_id,
        now=now,
    )


async def review(
    session: AsyncSession,
    vault: Vault,
    *,
    report: Report,
    values: dict[str, Any],
    responder_id: uuid.UUID | None,
    actor: str,
    now: datetime,
) -> tuple[ReportReview, dict[str, Any]]:
    """Set the desk's fields (already validated); only the fields given change. They are
    encrypted with the report's key; the row keeps who changed them and when, and its old
    clear columns are emptied. The report's row is locked first: two changes at once each
    rewrite the whole encrypted review, and the second must read what the first wrote."""
    await write_lock(session)
    mine = select(Report).where(Report.id == report.id).execution_options(populate_existing=True)
    await session.execute(locked(mine, session, key_share=True))
    row = await session.get(ReportReview, report.id, populate_existing=True)
    fields = review_fields(vault, report, row) | values
    if row is None:
        row = ReportReview(report_id=report.id, org_id=report.org_id)
        session.add(row)
    report.put(vault, "review_enc", json.dumps({k: fields[k] for k in REVIEW_KEYS}))
    for key, value in UNREVIEWED.items():
        setattr(row, key, [] if key == "act_codes" else value)
    row.updated_at, row.updated_by = now, responder_id
    await session.flush()
    await audit.record(
        session,
        vault,
        actor=actor,
        action="report.review",
        target=str(report.id),
        org_id=report.org_id,
        detail={"fields": sorted(values)},
        now=now,
    )
    return row, fields


def export_record(
    vault: Vault, report: Report, handle: str | None, rv: ReportReview | None
) -> dict[str, Any]:
    """One report coded to HURIDOCS ESF field names; the body travels sealed."""
    fields = triage(vault, report)
    desk = review_fields(vault, report, rv)
    return {
        "id": str(report.id),
        "receipt_code": report.receipt_code,
        "received_at": report.created_at.isoformat(),
        "defender_handle": handle,
        "type_of_act": fields.get("type_of_act"),
        "initial_date": fields.get("initial_date"),
        "initial_date_type": fields.get("initial_date_type"),
        "country": fields.get("country"),
        "urgency": fields.get("urgency"),
        "violation_status": desk["verification"],
        "confirmed_act_codes": desk["act_codes"],
        "intervention_type": desk["intervention_type"],
        "intervention_status": desk["intervention_status"],
        "sealed_body": base64.b64encode(report.sealed_body).decode(),
    }


async def export(
    session: AsyncSession, vault: Vault, *, org_id: uuid.UUID, actor: str, fmt: str, now: datetime
) -> str:
    """The newest ``EXPORT_LIMIT`` reports, page by page, giving the event loop a turn
    between pages (in one transaction: a report filed meanwhile is newer than the cursor)."""
    parts: list[str] = []
    count, before = 0, None
    while count < EXPORT_LIMIT:
        page = min(EXPORT_PAGE, EXPORT_LIMIT - count)
        rows = await list_reports(session, org_id=org_id, before=before, limit=page)
        if not rows:
            break
        records = [export_record(vault, r, h, v) for r, h, v in rows]
        # The items of json.dumps(list) and csv rows: joined, the same text as in one piece.
        parts.append(
            json.dumps(records, ensure_ascii=False)[1:-1] if fmt == "json" else csv_rows(records)
        )
        count += len(rows)
        before = (rows[-1][0].created_at, rows[-1][0].id)
        await asyncio.sleep(0)
        if len(rows) < page:
            break
    await audit.record(
        session,
        vault,
        actor=actor,
        action="report.export",
        target=fmt,
        org_id=org_id,
        detail={"count": count},
        now=now,
    )
    if fmt == "json":
        return '{"format": "huridocs-esf", "reports": [' + ", ".join(parts) + "]}"
    return csv_rows([], header=True) + "".join(parts)


def csv_cell(value: Any) -> str:
    """Defuse spreadsheet formulas (=HYPERLINK(...), +, -, @, tab, CR) with a leading quote."""
    text = ";".join(value) if isinstance(value, list) else "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_rows(records: list[dict[str, Any]], *, header: bool = False) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow([csv_cell(record.get(c)) for c in CSV_COLUMNS])
    return out.getvalue()
