"""The ``amparo`` command line. Bad input gets one line on stderr and exit code 2."""

from __future__ import annotations

from typing import Annotated

import typer

from amparo.admin import audit_app, keys_app, org_app, user_app
from amparo.broadcasts import broadcast_app, rollcall_app
from amparo.command import run, settings, with_runtime
from amparo.reports import reports_app
from amparo.runtime import Runtime
from core.i18n import operator_gettext as _

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
for sub, name in (
    (db_app, "db"),
    (org_app, "org"),
    (user_app, "user"),
    (keys_app, "keys"),
    (audit_app, "audit"),
    (reports_app, "reports"),
    (broadcast_app, "broadcast"),
    (rollcall_app, "rollcall"),
):
    app.add_typer(sub, name=name)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the desk API and dashboard (one process)."""
    from amparo.serve import serve as run_server

    run(run_server(settings(), host=host, port=port))


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="API processes sharing the port.")] = 1,
) -> None:
    """Run the desk API only (beside one or more workers)."""
    from amparo.serve import api as run_api

    run(run_api(settings(), host=host, port=port, workers=workers))


@app.command()
def worker() -> None:
    """Run the scheduler and the outbox dispatcher only (any number may share a database)."""
    from amparo.worker import worker as run_worker

    run(run_worker(settings()))


@app.command()
def chat(
    org: Annotated[
        str | None, typer.Option(help="Issue an invite code of this organisation to start with.")
    ] = None,
    as_: Annotated[str, typer.Option("--as", help="Who you are in the chat (an address).")] = "me",
    language: Annotated[
        str | None, typer.Option(help="The language your 'phone' reports, e.g. es.")
    ] = None,
) -> None:
    """Play a defender (or a trusted contact) in the terminal: the console channel."""
    from amparo.chat import chat as run_chat

    run(run_chat(settings(), org=org, address=as_, language=language))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema up to date."""

    async def body(_rt: Runtime) -> None:
        return None  # opening the runtime with migrate=True did the work

    with_runtime(body, migrate=True)
    typer.echo(_("database schema is up to date"))


def main() -> None:
    app()
