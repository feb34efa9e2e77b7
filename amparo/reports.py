"""``amparo reports open``: a sealed report opened on a responder's workstation (DESIGN.md, "Data
protection"). The report, its evidence and the passphrase-protected organisation keys come from
the desk's API with a token; the passphrase unlocks the keys here, and neither the keys nor the
plaintext ever go back. Every item's plaintext names its organisation, record and kind: an item
moved to another report opens, but is refused."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from amparo.command import JsonOpt, fail
from core.crypto import CryptoError
from core.desk_reports import EVIDENCE_KIND, SEALED_KIND
from core.i18n import operator_gettext as _
from core.reports import PART_KIND
from core.sealing import SealedMismatchError, open_sealed, unprotect_private_key
from core.text import file_name

reports_app = typer.Typer(no_args_is_help=True, help="Incident reports, opened on this machine.")

# What a terminal acts on instead of showing (abuse case 13): C0 controls (ESC starts OSC 52,
# which writes the clipboard, and cursor movement that erases a "refused" line above), DEL, C1
# (U+009B is CSI on its own), line and paragraph separators, and the bidirectional overrides
# and isolates that reorder a file name on screen ("photo\u202egpj.exe").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with everything a terminal would act on written as a visible escape."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


SWAPPED = "swapped"  # an item that opened but names another record
UNOPENED = "unopened"  # an item no key of the organisation opens
MISSING = "missing"  # a file the sealed body lists that the desk did not hand out


class Desk:
    """The desk's API, as the token's holder sees it."""

    def __init__(self, url: str, token: str) -> None:
        import httpx  # here: it costs every other command about 0.15 s to import (rich too)

        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=60,
            follow_redirects=False,
        )

    def get(self, path: str, report_id: uuid.UUID) -> Any:
        import httpx

        try:
            answer = self.client.get(path)
        except httpx.HTTPError:
            raise fail(_("cannot reach the desk at {url}").format(url=self.url)) from None
        if answer.status_code == 401:
            raise fail(_("the desk refused the API token"))
        if answer.status_code == 403:
            raise fail(_("the API token may not read reports"))
        if answer.status_code == 404:
            raise fail(_("no report {id} at this desk").format(id=report_id))
        if answer.status_code != 200:
            raise fail(_("the desk answered {status}").format(status=answer.status_code))
        return answer.json()


def check_url(url: str) -> None:
    """The API token goes in clear over http://: only to this machine's loopback."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        parsed = None
    if parsed is not None and parsed.host and parsed.scheme == "https":
        return
    if parsed is not None and parsed.scheme == "http" and _is_loopback(parsed.host):
        return
    # Plain English, like the settings' errors (the catalogues are not this change's).
    raise fail(
        "the desk's address must start with https:// (http:// only on this machine's "
        "loopback): the API token would cross the network in clear"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_secret(path: Path | None, env: str, prompt: str) -> str:
    """A secret from a file, the environment, piped standard input or a hidden prompt; never
    from the command line, where it would stay in the shell's history."""
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError:
            raise fail(_("cannot read {path}").format(path=path)) from None
    if os.environ.get(env):
        return os.environ[env].strip()
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    text: str = typer.prompt(prompt, hide_input=True)
    return text


def unlock(keys: list[dict[str, Any]], passphrase: str) -> list[bytes]:
    """The organisation's private keys the passphrase opens, newest first."""
    opened = []
    for key in reversed(keys):
        try:
            opened.append(unprotect_private_key(b64(key["protected_private_key"]), passphrase))
        except (CryptoError, KeyError, TypeError, ValueError):
            continue  # an older key under another passphrase: its items stay closed
    if not opened:
        raise fail(_("wrong passphrase for the organisation key"))
    return opened


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def open_item(
    privates: list[bytes], blob: str, *, org_id: uuid.UUID, record_id: uuid.UUID, kind: str
) -> Any:
    """The item's body; SWAPPED when it names another record; UNOPENED when no key opens it."""
    try:
        sealed = b64(blob)
    except (binascii.Error, ValueError):
        return UNOPENED
    for private in privates:
        try:
            return open_sealed(private, sealed, org_id=org_id, record_id=record_id, kind=kind)
        except SealedMismatchError:
            return SWAPPED
        except CryptoError:
            continue  # sealed to another key version
    return UNOPENED


def safe_name(sha256: str, filename: Any) -> str:
    """A file name for the evidence that cannot leave the directory: its hash, then what is
    left of the defender's name for it once anything but letters, digits, dot, dash and
    underscore is gone."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(str(filename or "")).name).lstrip(".")[:80]
    return f"{sha256[:16]}-{name or 'evidence'}"


def save(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` only for this user; an existing file with other content is refused."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.read_bytes() == data:
            return path
        message = _("{path} exists and differs; choose another directory").format(path=path)
        raise fail(message) from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def evidence_entry(
    privates: list[bytes],
    item: dict[str, Any],
    org_id: uuid.UUID,
    report_id: uuid.UUID,
    directory: Path | None,
) -> dict[str, Any]:
    body = open_item(
        privates,
        item.get("sealed", ""),
        org_id=org_id,
        record_id=uuid.UUID(str(item["id"])),
        kind=EVIDENCE_KIND,
    )
    entry: dict[str, Any] = {"id": str(item["id"])}
    if body in (SWAPPED, UNOPENED) or not isinstance(body, dict):
        return entry | {"refused": body if body in (SWAPPED, UNOPENED) else SWAPPED}
    if body.get("report") != str(report_id):  # a file moved here from another report
        return entry | {"refused": SWAPPED}
    try:
        data = b64(str(body.get("original") or ""))
    except (binascii.Error, ValueError):
        data = b""  # then its hash cannot match
    sha256 = hashlib.sha256(data).hexdigest()
    entry |= {
        "filename": body.get("filename"),
        "content_type": body.get("content_type"),
        "size": len(data),
        "sha256": body.get("sha256"),
        "received_at": body.get("received_at"),
    }
    if sha256 != body.get("sha256"):  # not the bytes the desk hashed on receipt
        return entry | {"refused": "hash"}
    if directory is None:
        return entry | {"saved_as": None}
    return entry | {"saved_as": str(save(directory, safe_name(sha256, body["filename"]), data))}


def missing(body: dict[str, Any], files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The files the sealed body lists (sealed when the report was filed) that the desk's
    answer lacks: deleted or held back by whoever holds the server. Sealing proves what is
    there; only this list tells what is not."""
    listed = body.get("evidence")
    if not isinstance(listed, list):  # a body sealed by anything else: nothing to compare
        return []
    handed = {str(f.get("id")) for f in files}
    return [{"id": str(i), "refused": MISSING} for i in listed if str(i) not in handed]


def unlisted(body: dict[str, Any], file: dict[str, Any]) -> bool:
    """A file the sealed body does not list: anyone holding the public key can seal one that
    names this report, but not add it to the list sealed when the defender sent the report."""
    listed = body.get("evidence")
    return isinstance(listed, list) and str(file.get("id")) not in {str(i) for i in listed}


@reports_app.command("open")
def open_report(
    report_id: Annotated[uuid.UUID, typer.Argument(help="The report's id, as the desk shows it.")],
    url: Annotated[
        str, typer.Option(envvar="AMPARO_DESK_URL", help="The desk's address.")
    ] = "http://127.0.0.1:8000",
    token_file: Annotated[
        Path | None,
        typer.Option(help="Read the API token from this file (else AMPARO_API_TOKEN)."),
    ] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the organisation key's passphrase from this file.")
    ] = None,
    evidence: Annotated[
        Path | None,
        typer.Option(help="Save the evidence files here, each checked against its SHA-256."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a sealed report on this machine with the organisation key's passphrase."""
    check_url(url)  # before the token is even read
    token = read_secret(token_file, "AMPARO_API_TOKEN", _("API token"))
    desk = Desk(url, token)
    try:
        sealed = desk.get(f"/reports/{report_id}/sealed", report_id)
        keys = desk.get("/org/keys", report_id)
        files = desk.get(f"/reports/{report_id}/evidence", report_id)
    finally:
        desk.client.close()
    passphrase = read_secret(
        passphrase_file, "AMPARO_ORG_PASSPHRASE", _("Passphrase for the organisation key")
    )
    privates = unlock(keys, passphrase)
    org_id = uuid.UUID(str(sealed["org_id"]))
    body = open_item(
        privates, sealed["sealed_body"], org_id=org_id, record_id=report_id, kind=SEALED_KIND
    )
    if body == UNOPENED:
        raise fail(_("no key of the organisation opens this report"))
    if body == SWAPPED or not isinstance(body, dict):
        raise fail(_("this report's sealed body names another record; it may have been swapped"))
    parts = [
        open_item(privates, part, org_id=org_id, record_id=report_id, kind=PART_KIND)
        for part in body.get("parts") or []
    ]
    body["parts"] = [{"refused": p} if p in (SWAPPED, UNOPENED) else p for p in parts]
    found = [
        {"id": str(f.get("id")), "refused": SWAPPED}  # not this report's: planted, or moved
        if unlisted(body, f)
        else evidence_entry(privates, f, org_id, report_id, evidence)
        for f in files
    ]
    found += missing(body, files)
    data = {"report": str(report_id), "body": body, "evidence": found}
    if as_json:  # the same JSON: \u escapes are JSON's own
        typer.echo(printable(json.dumps(data, ensure_ascii=False)))
    else:
        show(data, evidence is not None)
    if any("refused" in item for item in [*body["parts"], *found]):
        raise typer.Exit(1)  # shown, not dropped, but the desk must know


def show(data: dict[str, Any], saving: bool) -> None:
    def echo(line: str) -> None:
        typer.echo(printable(line))  # names, types and text as the defender's phone sent them

    body = data["body"]
    echo(_("report {id}, opened on this machine").format(id=data["report"]))
    for key, value in body.items():
        if key not in ("parts", "format") and value not in (None, "", [], {}):
            echo(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    for part in body["parts"]:
        if "refused" in part:
            echo("  " + refusal(part["refused"]))
        else:
            for key, value in part.items():
                echo(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    for item in data["evidence"]:
        if "refused" in item:
            echo("  " + refusal(item["refused"]))
            continue
        line = _("evidence {name} ({type}, {size} bytes), SHA-256 {sha256}").format(
            name=file_name(item["filename"]) or item["id"],  # no escapes for the terminal
            type=item["content_type"],
            size=item["size"],
            sha256=item["sha256"],
        )
        echo(f"  {line}")
        if item["saved_as"]:
            echo("    " + _("saved as {path}").format(path=item["saved_as"]))
    if data["evidence"] and not saving:
        echo(_("evidence files are not saved; add --evidence DIRECTORY to save them"))


def refusal(reason: str) -> str:
    if reason == "hash":
        return _("refused: an evidence file does not match the SHA-256 taken on receipt")
    if reason == UNOPENED:
        return _("refused: no key of the organisation opens an item")
    if reason == MISSING:
        return _("refused: an evidence file the report lists is missing")
    return _("refused: an item names another record; it may have been swapped")
