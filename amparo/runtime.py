"""What every command needs: settings checked, data directory, keys, a migrated database."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.clear_reviews import encrypt_clear_reviews
from core.config import Mode, Settings
from core.crypto import Vault, ensure_keyring
from core.db import create_engine, dispose, ping, sessionmaker
from core.i18n import operator_gettext as _
from core.migrate import current_revision, head_revision, upgrade


class StartupError(Exception):
    """The process cannot start; the message is one translated line for the operator."""


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    vault: Vault


def prepare_data_dir(settings: Settings) -> None:
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        raise StartupError(
            _("cannot create the data directory {path}").format(path=path)
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(_("the data directory {path} is not writable").format(path=path))


# SQLite's files beside the database: its write-ahead log, the WAL index, a rollback journal.
_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def protect_sqlite_files(url: str) -> None:
    """The embedded database only for this user (R17): created 0600 before SQLite opens it
    (SQLite then gives its -wal and -shm files the database file's mode), and an existing one
    that others could read tightened to 0600. Created with the umask (0644) in a data directory
    that already existed, it let every local user read password hashes, blind indexes and
    the audit chain."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if parsed.database.startswith("file:") or parsed.query.get("mode") == "memory":
        return  # a URI SQLite itself interprets
    database = Path(parsed.database)
    try:
        os.close(os.open(database, os.O_RDONLY | os.O_CREAT, 0o600))
    except OSError:
        return  # SQLite's own error, on connecting, says what is wrong
    for suffix in _SQLITE_COMPANIONS:
        path = database.with_name(database.name + suffix)
        with contextlib.suppress(OSError):  # absent, or another user's: left as it is
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(0o600)


def load_vault(settings: Settings) -> Vault:
    # Locally a missing key file is created (mode 0600); production never invents keys.
    settings.check_production()
    ring = ensure_keyring(settings.key_file, create=settings.mode is Mode.development)
    return Vault(ring, key_file=settings.key_file)  # follows `amparo keys rotate`


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def check_database(engine: AsyncEngine, url: str) -> None:
    try:
        await ping(engine)
    except (OSError, DBAPIError, TimeoutError) as exc:
        raise StartupError(
            _("cannot reach the database at {url} ({reason})").format(
                url=safe_url(url), reason=type(exc).__name__
            )
        ) from None


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, migrate: bool | None = None
) -> AsyncIterator[Runtime]:
    """Open everything; ``migrate`` defaults to upgrading only the embedded SQLite database."""
    prepare_data_dir(settings)
    vault = load_vault(settings)
    protect_sqlite_files(settings.db_url)
    engine = create_engine(settings.db_url)
    try:
        await check_database(engine, settings.db_url)
        if migrate if migrate is not None else settings.is_embedded_sqlite:
            await upgrade(engine)
            await encrypt_clear_reviews(sessionmaker(engine), vault)  # what 0010 could not
        elif (current := await current_revision(engine)) != head_revision():
            raise StartupError(
                _(
                    "the database schema is at {current}, not {head}: run 'amparo db upgrade'"
                ).format(current=current or "-", head=head_revision())
            )
        yield Runtime(settings, engine, sessionmaker(engine), vault)
    finally:
        await dispose(engine)
