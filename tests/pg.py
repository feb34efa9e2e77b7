"""A throwaway PostgreSQL cluster from Debian's server binaries, for one test session."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import asyncpg


def find_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://amparo@127.0.0.1:{self.port}"

    def _run(self, *args: str) -> None:
        # initdb and postgres refuse to run as root; Debian's package creates the postgres user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        data = self.root / "data"
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "amparo",
            "--no-sync",
            "-E",
            "UTF8",
        )
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            # Tables are emptied by DELETE and reused (``empty_tables``): no vacuum hands the
            # dead rows' space to new ones, so rows come back in the order written, as from a
            # new table (tests that order by a timestamp the test clock makes equal rely on it).
            "-c autovacuum=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        try:
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "stop",
            )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found: run 'make test' to install them")
    root = Path(tempfile.mkdtemp(prefix="amparo-pg-"))
    os.chmod(root, 0o755)
    cluster = Cluster(bindir, root, _free_port())
    cluster.start()
    return cluster


async def admin(cluster: Cluster, sql: str) -> None:
    """One statement on the cluster's ``postgres`` database (CREATE/DROP DATABASE)."""
    conn = await asyncpg.connect(f"postgresql://amparo@127.0.0.1:{cluster.port}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# What a database's schema is, as one hash: its tables' columns, indexes, constraints, schemas,
# extensions and settings. A reused database must still be the one the template made.
_SHAPE = """
SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
  SELECT concat_ws(':', table_name, column_name, data_type, column_default, is_nullable) AS x
    FROM information_schema.columns WHERE table_schema = 'public'
  UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL SELECT conname || pg_get_constraintdef(oid) FROM pg_constraint
    WHERE connamespace = 'public'::regnamespace
  UNION ALL SELECT 'schema ' || nspname FROM pg_namespace
  UNION ALL SELECT 'extension ' || extname FROM pg_extension
  UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT 'setting ' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS parts
"""


async def empty_tables(conn: asyncpg.Connection) -> None:
    """Every row of the public schema's tables deleted and its sequences restarted, in a few
    milliseconds: TRUNCATE gives each table and index a new file (0.25 s for this schema), a
    new database from a template costs 0.4 s. Foreign keys are not checked meanwhile (the
    replica role: every table is emptied, so none is left pointing anywhere)."""
    tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    sequences = await conn.fetch(
        "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
    )
    # Locked first, as TRUNCATE would: a transaction a test left in flight ends before the
    # tables are emptied, not just after (its rows would reach the next test).
    names = ", ".join(f'"{t}"' for (t,) in tables)
    statements = [f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE"]
    statements += [f'DELETE FROM "{t}"' for (t,) in tables]
    statements += [f'ALTER SEQUENCE "{s}" RESTART' for (s,) in sequences]
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("; ".join(statements))


class Reused:
    """Databases made from a template, handed back emptied instead of dropped (a test's
    database costs a millisecond, not 0.4 s). One that a test changed the shape of, or that
    cannot be emptied, is dropped."""

    def __init__(self, cluster: Cluster, template: str) -> None:
        self.cluster, self.template = cluster, template
        self.free: list[str] = []
        self.shape: str | None = None

    async def take(self) -> str:
        if self.free:
            return self.free.pop()
        name = f"t_{os.urandom(16).hex()}"
        await admin(self.cluster, f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    async def give_back(self, name: str) -> None:
        try:
            kept = await self._emptied(name)
        except (OSError, asyncpg.PostgresError):
            kept = False
        if kept:
            self.free.append(name)
        else:
            await admin(self.cluster, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _emptied(self, name: str) -> bool:
        url = f"postgresql://amparo@127.0.0.1:{self.cluster.port}"
        if self.shape is None:
            conn = await asyncpg.connect(f"{url}/{self.template}")
            try:
                self.shape = await conn.fetchval(_SHAPE)
            finally:
                await conn.close()
        conn = await asyncpg.connect(f"{url}/{name}")
        try:
            # Whatever the test left connected goes (waiting up to 5 s for each to end).
            await conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if await conn.fetchval(_SHAPE) != self.shape:
                return False
            await empty_tables(conn)
            return True
        finally:
            await conn.close()
