"""Admin commands: organisations, responders, the master key file and the audit log."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from amparo.command import JsonOpt, account_message, emit, fail, run, settings, with_runtime
from amparo.runtime import Runtime, prepare_data_dir
from core import audit, keys
from core.accounts import (
    MIN_PASSPHRASE,
    AccountError,
    create_org,
    create_responder,
    find_org,
    make_org_key,
)
from core.config import Mode
from core.db import transaction
from core.i18n import operator_gettext as _
from core.i18n import operator_ngettext as ngettext
from core.models import Role

org_app = typer.Typer(no_args_is_help=True, help="Organisations (desks and networks).")
user_app = typer.Typer(no_args_is_help=True, help="Responders who use the desk.")
keys_app = typer.Typer(no_args_is_help=True, help="The master key file.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


def read_passphrase(passphrase_file: Path | None) -> str:
    if passphrase_file is not None:
        try:
            return passphrase_file.read_text().rstrip("\n")
        except OSError:
            raise fail(_("cannot read {path}").format(path=passphrase_file)) from None
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    text: str = typer.prompt(
        _("Passphrase for the organisation key (at least {min} characters)").format(
            min=MIN_PASSPHRASE
        ),
        hide_input=True,
        confirmation_prompt=True,
    )
    return text


KEY_FILE_FORMAT = "amparo-org-key-1"


@org_app.command("keypair")
def org_keypair(
    out: Annotated[Path, typer.Argument(help="File to write the key pair to (made 0600).")],
    passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the key passphrase from this file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an organisation key pair on this machine (a responder's, not the server): the
    private key protected under a passphrase; then 'amparo org create NAME --key-file OUT'
    on the server."""
    passphrase = read_passphrase(passphrase_file)
    try:
        public, protected = make_org_key(passphrase)
    except AccountError as exc:
        raise fail(account_message(exc)) from None
    body = {
        "format": KEY_FILE_FORMAT,
        "public_key": base64.b64encode(public).decode(),
        "protected_private_key": base64.b64encode(protected).decode(),
    }
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise fail(_("{path} already exists").format(path=out)) from None
    except OSError as exc:
        raise fail(
            _("cannot write {path} ({reason})").format(path=out, reason=exc.strerror)
        ) from None
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    emit(
        as_json,
        {"key_file": str(out), "public_key": body["public_key"]},
        [_("wrote the organisation key pair to {path}").format(path=out)],
    )


def read_key_file(path: Path) -> tuple[bytes, bytes]:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != KEY_FILE_FORMAT:
            raise ValueError(data.get("format"))
        return (
            base64.b64decode(data["public_key"], validate=True),
            base64.b64decode(data["protected_private_key"], validate=True),
        )
    except OSError:
        raise fail(_("cannot read {path}").format(path=path)) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise fail(account_message(AccountError("bad_org_key"))) from None


@org_app.command("create")
def org_create(
    name: Annotated[str, typer.Argument(help="Name of the desk or network.")],
    key_file: Annotated[
        Path | None,
        typer.Option(help="The key pair 'amparo org keypair' made on a responder's machine."),
    ] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the key passphrase from this file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an organisation with a key pair made on a responder's machine (--key-file), or,
    outside production, one made here (the private key kept under a passphrase)."""
    key = None if key_file is None else read_key_file(key_file)
    passphrase = None
    if key is None:
        if settings().mode is Mode.production:  # the server never makes one (SECURITY.md R14)
            raise fail(
                _(
                    "in production the organisation key pair is made on a responder's machine: "
                    "run 'amparo org keypair FILE' there, then 'amparo org create NAME "
                    "--key-file FILE' here"
                )
            )
        passphrase = read_passphrase(passphrase_file)

    async def body(rt: Runtime) -> dict[str, Any]:
        async with transaction(rt.sessions) as session:
            org = await create_org(session, rt.vault, name, passphrase, key=key)
            assert org.public_key is not None
            return {
                "id": str(org.id),
                "name": org.name,
                "public_key": base64.b64encode(org.public_key).decode(),
            }

    data = with_runtime(body)
    emit(as_json, data, [_("created organisation {name} ({id})").format(**data)])


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Login name of the responder.")],
    org: Annotated[str, typer.Option("--org", help="Organisation name or id.")],
    role: Annotated[Role, typer.Option(help="admin, responder or observer.")] = Role.responder,
    as_json: JsonOpt = False,
) -> None:
    """Create a responder; prints a one-time password and a TOTP provisioning URI, once."""

    async def body(rt: Runtime) -> dict[str, Any]:
        async with transaction(rt.sessions) as session:
            organisation = await find_org(session, org)
            new = await create_responder(session, rt.vault, organisation, username, role)
            return {
                "id": str(new.responder.id),
                "username": username,
                "org": organisation.name,
                "role": role.value,
                "password": new.password,
                "totp_uri": new.totp_uri,
            }

    data = with_runtime(body)
    emit(
        as_json,
        data,
        [
            _("created {role} {username} in {org}").format(**data),
            _("one-time password (change it at first login): {password}").format(**data),
            _("add this to an authenticator app: {totp_uri}").format(**data),
            _("neither is shown again."),
        ],
    )


@keys_app.command("init")
def keys_init(as_json: JsonOpt = False) -> None:
    """Create the master key file (mode 0600); refuses to replace one."""
    cfg = settings()

    async def main() -> None:
        prepare_data_dir(cfg)
        keys.init_keys(cfg.key_file)

    run(main())
    emit(
        as_json,
        {"key_file": str(cfg.key_file)},
        [_("created the master key file {path}; keep a copy offline").format(path=cfg.key_file)],
    )


@keys_app.command("rotate")
def keys_rotate(as_json: JsonOpt = False) -> None:
    """Rotate the key-encryption key and rewrap every data key (stop other processes first)."""

    async def body(rt: Runtime) -> keys.RotationReport:
        report = await keys.rotate(rt.sessions, rt.settings.key_file)
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                rt.vault,  # the audit key is not rotated with the key-encryption key
                actor="cli",
                action="keys.rotate",
                detail={"old": report.old_version, "new": report.new_version},
            )
        return report

    report = with_runtime(body)
    emit(
        as_json,
        {
            "old_version": report.old_version,
            "new_version": report.new_version,
            "rows_rewrapped": report.rows_rewrapped,
        },
        [
            ngettext(
                "key version {new} is now in use; {rows} data key rewrapped",
                "key version {new} is now in use; {rows} data keys rewrapped",
                report.rows_rewrapped,
            ).format(new=report.new_version, rows=report.rows_rewrapped)
        ],
    )


@keys_app.command("rotate-index")
def keys_rotate_index(as_json: JsonOpt = False) -> None:
    """Replace the blind-index key of channel addresses (phone numbers, chat ids) and
    recompute every address's index. Running processes need not stop: they follow the key
    file and look addresses up under both keys meanwhile (it takes a few seconds)."""

    async def body(rt: Runtime) -> int:
        done = await keys.rotate_index(rt.sessions, rt.settings.key_file)
        async with transaction(rt.sessions) as session:
            await audit.record(
                session, rt.vault, actor="cli", action="keys.rotate_index", detail={"rows": done}
            )
        return done

    done = with_runtime(body)
    emit(
        as_json,
        {"addresses_reindexed": done},
        [
            ngettext(
                "new address index key in use; {rows} address reindexed",
                "new address index key in use; {rows} addresses reindexed",
                done,
            ).format(rows=done)
        ],
    )


@audit_app.command("head")
def audit_head() -> None:
    """Print the last entry's number and hash, to keep in a separate append-only store."""

    async def body(rt: Runtime) -> tuple[int, bytes] | None:
        async with rt.sessions() as session:
            return await audit.head(session)

    last = with_runtime(body)
    typer.echo(json.dumps({"seq": last[0], "hash": last[1].hex()} if last else None))


@audit_app.command("verify")
def audit_verify(
    head: Annotated[
        str | None, typer.Option(help="An exported head, as printed by 'amparo audit head'.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the chain; exit code 1 names the first altered, deleted or reordered entry."""
    expected = None
    if head is not None:
        try:
            data = json.loads(head)
            expected = (int(data["seq"]), bytes.fromhex(data["hash"]))
        except (ValueError, TypeError, KeyError):
            raise fail(_("the exported head is not valid")) from None

    async def body(rt: Runtime) -> audit.Verdict:
        async with rt.sessions() as session:
            return await audit.verify(session, rt.vault, expected_head=expected)

    verdict = with_runtime(body)
    if verdict.ok:
        line = ngettext(
            "audit log intact: {n} entry verified",
            "audit log intact: {n} entries verified",
            verdict.checked,
        ).format(n=verdict.checked)
    else:
        line = _("audit log broken at entry {seq}: {reason}").format(
            seq=verdict.first_bad_seq, reason=verdict.reason
        )
    emit(
        as_json,
        {
            "ok": verdict.ok,
            "checked": verdict.checked,
            "first_bad_seq": verdict.first_bad_seq,
            "reason": verdict.reason,
        },
        [line],
    )
    if not verdict.ok:
        raise typer.Exit(1)
