"""Reports: triage fields, the sealed body, the desk's review, HURIDOCS exports."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from core import desk_reports
from core.crypto import open_sealed, seal, unprotect_private_key
from core.db import transaction
from core.models import AuditEntry, Evidence, ReportReview
from core.throttle import Limits, Throttle
from tests.api.conftest import PASSPHRASE, Desk, make_report


async def test_it_lists_reports_with_triage_and_review(desk: Desk) -> None:
    report = desk.a.report
    assert report is not None
    async with await desk.client(desk.a, "responder") as c:
        review = await c.patch(
            f"/api/v1/reports/{report.id}/review",
            json={
                "verification": "likely",
                "act_codes": ["02010302"],
                "intervention_type": "legal_aid",
            },
        )
        bad = await c.patch(f"/api/v1/reports/{report.id}/review", json={"act_codes": ["x"]})
        items = (await c.get("/api/v1/reports")).json()["items"]
    assert review.status_code == 200 and bad.status_code == 422
    assert [i["id"] for i in items] == [str(report.id)]
    assert items[0]["triage"]["type_of_act"] == "02010302"
    assert items[0]["review"]["act_codes"] == ["02010302"]
    assert "SECRET-CANARY" not in str(items)


async def test_the_desks_review_is_encrypted_at_rest(desk: Desk) -> None:
    """The confirmed act codes name the type of act the triage keeps encrypted; they (and the
    verification and intervention) were in clear in report_reviews for a database dump.
    Encrypted with the report's key now; a review written before is still read, and emptied
    from its clear columns when next changed; the API, the export and the list agree."""
    report = desk.a.report
    assert report is not None
    async with transaction(desk.sessions) as s:  # a review from before: in clear
        s.add(ReportReview(report_id=report.id, org_id=desk.a.org.id, verification="possible"))
    async with await desk.client(desk.a, "responder") as c:
        old = (await c.get("/api/v1/reports")).json()["items"][0]["review"]
        changed = await c.patch(
            f"/api/v1/reports/{report.id}/review",
            json={"act_codes": ["030103"], "intervention_type": "medical_aid"},
        )
        items = (await c.get("/api/v1/reports")).json()["items"]
        exported = (await c.get("/api/v1/reports/export")).json()["reports"]
    assert old["verification"] == "possible"
    assert changed.status_code == 200, changed.text
    want = {
        "verification": "possible",
        "act_codes": ["030103"],
        "intervention_type": "medical_aid",
        "intervention_status": None,
    }
    assert {k: changed.json()[k] for k in want} == want
    assert {k: items[0]["review"][k] for k in want} == want
    assert exported[0]["confirmed_act_codes"] == ["030103"]
    assert exported[0]["violation_status"] == "possible"
    async with desk.sessions() as s:
        dump = [
            repr(row)
            for table in ("report_reviews", "reports")
            for row in (await s.execute(text(f"SELECT * FROM {table}"))).all()
        ]
    for secret in ("030103", "medical_aid", "possible"):
        assert not any(secret in row for row in dump), secret


async def test_it_hands_out_the_sealed_body_for_the_desk_to_open(desk: Desk) -> None:
    report = desk.a.report
    assert report is not None and desk.a.org.protected_private_key is not None
    async with await desk.client(desk.a, "observer") as c:
        sealed = (await c.get(f"/api/v1/reports/{report.id}/sealed")).json()
    private = unprotect_private_key(desk.a.org.protected_private_key, PASSPHRASE)
    body = open_sealed(
        private,
        base64.b64decode(sealed["sealed_body"]),
        org_id=uuid.UUID(sealed["org_id"]),
        record_id=uuid.UUID(sealed["id"]),
        kind=sealed["kind"],
    )
    assert body == {"narrative": "SECRET-CANARY"}
    async with desk.sessions() as s:
        actions = (await s.execute(select(AuditEntry.action, AuditEntry.detail))).all()
    assert ("report.view_sealed", {}) in [(a, d) for a, d in actions]
    assert "SECRET-CANARY" not in str(actions)


async def test_it_exports_huridocs_coded_json_and_defused_csv(desk: Desk) -> None:
    async with await desk.client(desk.a, "responder") as c:
        as_json = await c.get("/api/v1/reports/export", params={"format": "json"})
        as_csv = await c.get("/api/v1/reports/export", params={"format": "csv"})
    record = as_json.json()["reports"][0]
    assert record["type_of_act"] == "02010302" and record["violation_status"] == "unknown"
    assert "SECRET-CANARY" not in as_json.text + as_csv.text  # the body stays sealed
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert rows[0]["country"] == '\'=HYPERLINK("http://x")'
    # Defused like any cell: a base64 body starting with "+" gains the quote too.
    assert rows[0]["sealed_body"].removeprefix("'") == record["sealed_body"]
    async with desk.sessions() as s:
        exports = (
            (await s.execute(select(AuditEntry).where(AuditEntry.action == "report.export")))
            .scalars()
            .all()
        )
    assert len(exports) == 2 and exports[0].org_id == desk.a.org.id


async def test_a_long_export_comes_page_by_page_whole_and_in_order(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 2, with reports filed in the same microsecond across a page's edge: each
    report once, newest first, and the same text as in one page."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    async with transaction(desk.sessions) as s:
        for i in range(7):
            report = make_report(desk.vault, desk.a, f"C{i}")
            report.created_at = at + timedelta(seconds=i // 3)
            s.add(report)
    desk.app.state.limits = Limits(export=Throttle(10, 3600))
    texts = []
    for page in (desk_reports.EXPORT_LIMIT, 2):
        monkeypatch.setattr(desk_reports, "EXPORT_PAGE", page)
        async with await desk.client(desk.a, "responder") as c:
            texts.append(
                [(await c.get(f"/api/v1/reports/export?format={f}")).text for f in ("json", "csv")]
            )
    assert texts[0] == texts[1]
    records = json.loads(texts[1][0])["reports"]
    assert len({r["id"] for r in records}) == len(records) == 8  # with the fixture's own
    assert [r["received_at"] for r in records] == sorted(
        (r["received_at"] for r in records), reverse=True
    )
    assert len(list(csv.DictReader(io.StringIO(texts[1][1])))) == 8


async def test_an_export_gives_the_event_loop_a_turn_between_pages(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In `amparo serve` the escalation engine shares the loop: 10,000 reports read and
    serialised in one go held it for nearly a second."""
    async with transaction(desk.sessions) as s:
        s.add_all(make_report(desk.vault, desk.a, "CO") for _ in range(9))
    monkeypatch.setattr(desk_reports, "EXPORT_PAGE", 2)
    turns, exporting = 0, True

    async def other_work() -> None:
        nonlocal turns
        while exporting:
            await asyncio.sleep(0)
            turns += 1

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    start = turns
    async with transaction(desk.sessions) as s:
        text = await desk_reports.export(
            s, desk.vault, org_id=desk.a.org.id, actor="test", fmt="csv", now=datetime.now(UTC)
        )
        during = turns - start
    exporting = False
    await other
    assert text.count("\r\n") == 11 and during >= 4  # header + 10 reports; 5 pages


async def test_it_limits_exports(desk: Desk) -> None:
    desk.app.state.limits = Limits(export=Throttle(2, 3600))
    async with await desk.client(desk.a, "responder") as c:
        codes = [(await c.get("/api/v1/reports/export")).status_code for _ in range(3)]
    async with await desk.client(desk.a, "admin") as c:
        other = (await c.get("/api/v1/reports/export")).status_code
    assert (codes, other) == ([200, 200, 429], 200)


async def test_it_hands_out_filed_evidence_sealed(desk: Desk) -> None:
    report, org = desk.a.report, desk.a.org
    assert report is not None and org.public_key and org.protected_private_key
    filed, draft = uuid.uuid4(), uuid.uuid4()
    async with transaction(desk.sessions) as s:
        for evidence_id, filed_at in ((filed, datetime.now(UTC)), (draft, None)):
            sealed = seal(
                org.public_key,
                org_id=org.id,
                record_id=evidence_id,
                kind="report.evidence",
                body={"name": "CANARY-PHOTO.jpg"},
            )
            s.add(
                Evidence(
                    id=evidence_id,
                    org_id=org.id,
                    report_id=report.id,
                    sealed=sealed,
                    filed_at=filed_at,
                )
            )
    async with await desk.client(desk.a, "observer") as c:
        files = (await c.get(f"/api/v1/reports/{report.id}/evidence")).json()
    assert [f["id"] for f in files] == [str(filed)]
    private = unprotect_private_key(org.protected_private_key, PASSPHRASE)
    body = open_sealed(
        private,
        base64.b64decode(files[0]["sealed"]),
        org_id=org.id,
        record_id=filed,
        kind=files[0]["kind"],
    )
    assert body == {"name": "CANARY-PHOTO.jpg"}


async def test_two_review_changes_at_once_both_stay(desk: Desk) -> None:
    """The encrypted review is rewritten whole: two changes at once must not lose one."""
    from tests.api.test_assign_race import audit_race

    report = desk.a.report
    assert report is not None
    url = f"/api/v1/reports/{report.id}/review"
    one, two = await desk.client(desk.a, "responder"), await desk.client(desk.a, "token")
    answers = await audit_race(
        desk,
        [
            lambda: one.patch(url, json={"act_codes": ["030103"]}),
            lambda: two.patch(url, json={"intervention_type": "legal_aid"}),
        ],
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    items = (await one.get("/api/v1/reports")).json()["items"]
    review = items[0]["review"]
    assert (review["act_codes"], review["intervention_type"]) == (["030103"], "legal_aid")
