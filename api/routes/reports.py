"""Incident reports: triage fields, the sealed body, the desk's review, HURIDOCS exports."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator

from api import errors
from api.deps import (
    LimitsDep,
    NowDep,
    ReportsExport,
    ReportsRead,
    ReportsWrite,
    SessionDep,
    SessionsDep,
    VaultDep,
)
from api.errors import N_, ApiError
from core import desk_reports
from core.auth import Principal
from core.desk_alerts import Cursor
from core.models import Report, ReportReview
from core.throttle import hit_each

router = APIRouter(prefix="/reports", tags=["reports"])

BAD_CURSOR = N_("this page cursor is not valid")
ACT_CODE = re.compile(r"^[0-9]{4,10}$")

Verification = Literal["unknown", "confirmed", "likely", "possible", "unlikely"]
InterventionType = Literal[desk_reports.INTERVENTION_TYPES]  # type: ignore[valid-type]
InterventionStatus = Literal[desk_reports.INTERVENTION_STATUS]  # type: ignore[valid-type]


class ReviewOut(BaseModel):
    verification: str
    act_codes: list[str]
    intervention_type: str | None
    intervention_status: str | None
    updated_at: datetime | None
    updated_by: uuid.UUID | None


class ReportOut(BaseModel):
    id: uuid.UUID
    receipt_code: str
    received_at: datetime
    defender_handle: str | None
    version: int
    supersedes_id: uuid.UUID | None
    triage: dict[str, Any]
    review: ReviewOut


class ReportPage(BaseModel):
    items: list[ReportOut]
    next_cursor: str | None


class SealedOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    kind: str  # checked inside the sealed plaintext after opening, with org_id and id
    sealed_body: str  # base64 sealed box to the organisation key


class EvidenceOut(BaseModel):
    id: uuid.UUID
    received_at: datetime
    kind: str  # checked inside the sealed plaintext after opening, with org_id and id
    sealed: str  # base64 sealed box to the organisation key: hash, type, name and bytes


class ReviewIn(BaseModel):
    verification: Verification | None = None
    act_codes: Annotated[list[str], Field(max_length=20)] | None = None
    intervention_type: InterventionType | None = None
    intervention_status: InterventionStatus | None = None

    @field_validator("act_codes")
    @classmethod
    def _codes(cls, codes: list[str] | None) -> list[str] | None:
        if codes is not None and not all(ACT_CODE.match(c) for c in codes):
            raise ValueError("HURIDOCS act codes are 4 to 10 digits")
        return codes


def review_out(fields: dict[str, Any], rv: ReportReview | None) -> ReviewOut:
    return ReviewOut(
        verification=fields["verification"],
        act_codes=list(fields["act_codes"]),
        intervention_type=fields["intervention_type"],
        intervention_status=fields["intervention_status"],
        updated_at=rv.updated_at if rv else None,
        updated_by=rv.updated_by if rv else None,
    )


def out(vault: VaultDep, r: Report, handle: str | None, rv: ReportReview | None) -> ReportOut:
    return ReportOut(
        id=r.id,
        receipt_code=r.receipt_code,
        received_at=r.created_at,
        defender_handle=handle,
        version=r.version,
        supersedes_id=r.supersedes_id,
        triage=desk_reports.triage(vault, r),
        review=review_out(desk_reports.review_fields(vault, r, rv), rv),
    )


@router.get("", responses={422: {}})
async def list_reports(
    principal: ReportsRead,
    session: SessionDep,
    vault: VaultDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ReportPage:
    """Reports, newest first, with their triage fields and the desk's review."""
    try:
        after = None if cursor is None else Cursor.decode(cursor)
    except ValueError:
        raise ApiError(422, BAD_CURSOR) from None
    rows = await desk_reports.list_reports(
        session,
        org_id=principal.org_id,
        before=None if after is None else (after.at, after.id),
        limit=limit + 1,
    )
    following = None
    if len(rows) > limit:
        rows = rows[:limit]
        following = Cursor(rows[-1][0].created_at, rows[-1][0].id).encode()
    return ReportPage(items=[out(vault, r, h, v) for r, h, v in rows], next_cursor=following)


@router.get("/export", responses={200: {"content": {"text/csv": {}}}, 429: {}})
async def export_reports(
    principal: ReportsExport,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
    limits: LimitsDep,
    sessions: SessionsDep,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """Export coded to HURIDOCS ESF as JSON or CSV; report bodies stay sealed (base64).

    In CSV, a cell starting with =, +, -, @, tab or CR gets a leading single quote, so that
    no spreadsheet runs it as a formula; strip it before decoding a sealed body.
    """
    keyed = limits.export_of(principal.actor, str(principal.org_id))
    if await hit_each(sessions, keyed, now) is not None:
        raise ApiError(429, errors.TOO_MANY)
    text = await desk_reports.export(
        session, vault, org_id=principal.org_id, actor=principal.actor, fmt=format, now=now
    )
    media = "application/json" if format == "json" else "text/csv; charset=utf-8"
    disposition = f'attachment; filename="amparo-reports.{format}"'
    return Response(text, media_type=media, headers={"Content-Disposition": disposition})


async def _report(session: SessionDep, principal: Principal, report_id: uuid.UUID) -> Report:
    report = await desk_reports.get_report(session, principal.org_id, report_id)
    if report is None:
        raise ApiError(404, errors.NOT_FOUND)
    return report


@router.get("/{report_id}/sealed", responses={404: {}})
async def sealed_body(
    report_id: uuid.UUID, principal: ReportsRead, session: SessionDep, vault: VaultDep, now: NowDep
) -> SealedOut:
    """The sealed body, to open with the organisation key on the responder's machine."""
    report = await _report(session, principal, report_id)
    await desk_reports.viewed_sealed(session, vault, report=report, actor=principal.actor, now=now)
    return SealedOut(
        id=report.id,
        org_id=report.org_id,
        kind=desk_reports.SEALED_KIND,
        sealed_body=base64.b64encode(report.sealed_body).decode(),
    )


@router.get("/{report_id}/evidence", responses={404: {}})
async def sealed_evidence(
    report_id: uuid.UUID, principal: ReportsRead, session: SessionDep, vault: VaultDep, now: NowDep
) -> list[EvidenceOut]:
    """The report's evidence files, each sealed, to open on the responder's machine."""
    report = await _report(session, principal, report_id)
    files = await desk_reports.evidence(session, report)
    await desk_reports.viewed_sealed(
        session,
        vault,
        report=report,
        actor=principal.actor,
        now=now,
        action="report.view_evidence",
    )
    return [
        EvidenceOut(
            id=e.id,
            received_at=e.created_at,
            kind=desk_reports.EVIDENCE_KIND,
            sealed=base64.b64encode(e.sealed).decode(),
        )
        for e in files
    ]


@router.patch("/{report_id}/review", responses={404: {}})
async def review(
    report_id: uuid.UUID,
    body: ReviewIn,
    principal: ReportsWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> ReviewOut:
    """Set the desk's fields: verification, confirmed HURIDOCS act codes, intervention."""
    report = await _report(session, principal, report_id)
    values = body.model_dump(exclude_unset=True)
    if values.get("verification", "") is None:
        values["verification"] = "unknown"
    if "act_codes" in values and values["act_codes"] is None:
        values["act_codes"] = []
    row, fields = await desk_reports.review(
        session,
        vault,
        report=report,
        values=values,
        responder_id=principal.responder_id,
        actor=principal.actor,
        now=now,
    )
    return review_out(fields, row)
