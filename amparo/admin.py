"""Admin commands: organisations, responders, the master key file and the audit log."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from amparo.command import JsonOpt, emit, fail, run, settings, with_runtime
from amparo.runtime import Runtime, prepare_data_dir
from core import audit, keys
from core.accounts import MIN_PASSPHRASE, create_org, create_responder, find_org
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


@org_app.command("create")
def org_create(
    name: Annotated[str, typer.Argument(help="Name of the desk or network.")],
    passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the key passphrase from this file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an organisation and its key pair (the private key is kept under a passphrase)."""
    passphrase = read_passphrase(passphrase_file)

    async def body(rt: Runtime) -> dict[str, Any]:
        async with transaction(rt.sessions) as session:
            org = await create_org(session, rt.vault, name, passphrase)
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
