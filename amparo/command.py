"""What every ``amparo`` command shares: the settings, running a coroutine so that a known
failure becomes one line on stderr and exit code 2 (never a traceback), and the output, as
lines of text or one JSON object (``--json``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
import uvloop
from pydantic import ValidationError

from amparo.runtime import Runtime, StartupError, open_runtime
from core.accounts import AccountError
from core.config import ConfigError, Settings
from core.crypto import CryptoError
from core.i18n import operator_gettext as _

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]


def fail(message: str) -> typer.Exit:
    typer.echo(f"amparo: {message}", err=True)
    return typer.Exit(2)


def account_message(exc: AccountError) -> str:
    messages = {
        "unknown_org": _("no organisation named {org}"),
        "duplicate_org": _("an organisation named {org} already exists"),
        "bad_org_name": _("an organisation name has 1 to 200 characters"),
        "short_passphrase": _("the passphrase needs at least {min} characters"),
        "duplicate_user": _("a responder named {user} already exists"),
        "bad_username": _(
            "a username has 3 to 120 letters, digits or . _ @ -, and starts with a letter or digit"
        ),
        "bad_org_key": _("that file does not hold an organisation key pair made by Amparo"),
    }
    return messages[exc.code].format(**exc.params)


def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        error = (first.get("ctx") or {}).get("error")
        reason = str(error) if isinstance(error, ValueError) else first["msg"]
        if not first["loc"]:  # the settings' own check across fields names the setting
            raise fail(reason) from None
        field = "AMPARO_" + "_".join(str(p) for p in first["loc"]).upper()
        message = _("invalid setting {field}: {reason}").format(field=field, reason=reason)
        raise fail(message) from None


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main``; known failures become one line and exit code 2, never a traceback."""
    try:
        # uvloop (locked with uvicorn's extras) halves the event loop's cost per request.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    except AccountError as exc:
        raise fail(account_message(exc)) from None
    except (StartupError, ConfigError, CryptoError) as exc:
        raise fail(str(exc)) from None
    except PermissionError as exc:
        raise fail(_("permission denied: {path}").format(path=exc.filename)) from None


def with_runtime(
    body: Callable[[Runtime], Coroutine[Any, Any, T]], *, migrate: bool | None = None
) -> T:
    async def main() -> T:
        async with open_runtime(settings(), migrate=migrate) as rt:
            return await body(rt)

    return run(main())


def emit(as_json: bool, data: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data))
    else:
        for line in lines:
            typer.echo(line)
