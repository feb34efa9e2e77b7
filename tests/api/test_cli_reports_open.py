"""``amparo reports open``: a sealed report, its parts and its evidence opened on a responder's
workstation through the desk's API (a real server on loopback), never on the server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from amparo.cli import app
from core import reports
from core.db import transaction
from core.messages import InboundAttachment
from core.models import AuditEntry, Defender, Evidence, utcnow
from tests.api.conftest import PASSPHRASE, Desk, Org
from tests.core.test_media import jpeg_with_gps


async def cli(
    args: list[str], site: str, token: str, passphrase: str = PASSPHRASE, lang: str = "C"
) -> Result:
    """The command in a thread (the server answers on this loop); secrets piped, as from a
    password manager, never on the command line."""
    env = {"AMPARO_DESK_URL": site, "AMPARO_API_TOKEN": token, "LC_ALL": lang}
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, app, ["reports", "open", *args], input=passphrase + "\n", env=env
    )


async def file_report(desk: Desk, org: Org, photo: bytes, filename: str) -> uuid.UUID:
    assert org.defender is not None
    async with transaction(desk.sessions) as s:
        defender = await s.get(Defender, org.defender.id)
        assert defender is not None
        rid, now = uuid.uuid4(), utcnow()
        parts = [
            await reports.seal_part(
                s, defender=defender, report_id=rid, body={"text": "Two men followed me home."}
            )
        ]
        attachment = InboundAttachment("photo", "image/jpeg", len(photo), photo, filename)
        await reports.add_evidence(
            s, defender=defender, report_id=rid, attachment=attachment, now=now
        )
        body = {"format": "amparo-report-1", "perpetrator_type": "police", "parts": parts}
        filed = await reports.file(
            s, desk.vault, defender=defender, report_id=rid, triage={}, body=body, now=now
        )
    return filed.id


async def test_a_report_opens_on_a_workstation_with_its_evidence(
    desk: Desk, site: str, tmp_path: Path
) -> None:
    photo = jpeg_with_gps()
    report_id = await file_report(desk, desk.a, photo, "../../door.jpg")
    saved_dir = tmp_path / "evidence"
    done = await cli([str(report_id), "--evidence", str(saved_dir), "--json"], site, desk.a.token)
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert data["body"]["perpetrator_type"] == "police"
    assert data["body"]["parts"] == [{"text": "Two men followed me home."}]
    [found] = data["evidence"]
    digest = hashlib.sha256(photo).hexdigest()
    assert found["sha256"] == digest and found["filename"] == "../../door.jpg"
    path = Path(found["saved_as"])
    assert path.parent == saved_dir and path.name == f"{digest[:16]}-door.jpg"  # not ../../
    assert path.read_bytes() == photo and stat.S_IMODE(path.stat().st_mode) == 0o600
    async with desk.sessions() as s:
        actions = set((await s.execute(select(AuditEntry.action))).scalars())
    assert {"report.view_sealed", "report.view_evidence", "org.keys_view"} <= actions
    text = await cli([str(report_id)], site, desk.a.token)  # for people, and nothing saved
    assert text.exit_code == 0, text.output
    assert "Two men followed me home." in text.stdout and digest in text.stdout
    assert "--evidence" in text.stdout


async def test_an_evidence_file_moved_from_another_report_is_refused(
    desk: Desk, site: str, tmp_path: Path
) -> None:
    first = await file_report(desk, desk.a, jpeg_with_gps(), "a.jpg")
    second = await file_report(desk, desk.a, jpeg_with_gps(), "b.jpg")
    async with transaction(desk.sessions) as s:  # whoever holds the database moves a file
        moved = (await s.execute(select(Evidence).where(Evidence.report_id == first))).scalar_one()
        moved.report_id = second
    saved_dir = tmp_path / "evidence"
    done = await cli([str(second), "--json", "--evidence", str(saved_dir)], site, desk.a.token)
    assert done.exit_code == 1  # shown, not dropped, and the exit code says so
    evidence = json.loads(done.stdout.strip().splitlines()[-1])["evidence"]
    assert sorted("refused" in e for e in evidence) == [False, True]
    assert [e["refused"] for e in evidence if "refused" in e] == ["swapped"]
    assert [p.name.endswith("b.jpg") for p in saved_dir.iterdir()] == [True]


async def test_a_file_name_never_reaches_the_terminal_unclean(
    desk: Desk, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name sealed as sent (before core.text.file_name): no escape sequence is printed."""
    monkeypatch.setattr(reports, "file_name", lambda name: name)
    report_id = await file_report(desk, desk.a, jpeg_with_gps(), "door\x1b[2J\u202egpj.exe")
    text = await cli([str(report_id)], site, desk.a.token)
    assert text.exit_code == 0, text.output
    assert "evidence door[2Jgpj.exe (image/jpeg" in text.stdout, text.stdout


async def test_it_refuses_clearly_and_never_prints_a_traceback(desk: Desk, site: str) -> None:
    report_id = await file_report(desk, desk.a, jpeg_with_gps(), "a.jpg")
    wrong = await cli([str(report_id)], site, desk.a.token, passphrase="not the passphrase")
    bad_token = await cli([str(report_id)], site, "amp_not_a_token")
    elsewhere = await cli([str(report_id)], site, desk.b.token)  # another organisation's token
    down = await cli([str(report_id)], "http://127.0.0.1:9", desk.a.token)
    for result, message in (
        (wrong, "wrong passphrase for the organisation key"),
        (bad_token, "the desk refused the API token"),
        (elsewhere, f"no report {report_id} at this desk"),
        (down, "cannot reach the desk at http://127.0.0.1:9"),
    ):
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert "Traceback" not in result.output and "Two men" not in result.output
    spanish = await cli([str(report_id)], site, desk.a.token, "no es", lang="es_ES.UTF-8")
    assert "frase de contraseña incorrecta" in spanish.stderr.lower(), spanish.stderr
