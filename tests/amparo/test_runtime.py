"""What every command opens: the embedded database's files only for this user (R17)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from amparo.runtime import open_runtime
from core.config import Settings


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems give a service: files 0644 unless the program says otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(directory: Path) -> dict[str, int]:
    return {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in directory.iterdir()
        if p.name.startswith("amparo.db")
    }


async def test_the_database_and_its_wal_are_only_for_this_user(
    tmp_path: Path, usual_umask: None
) -> None:
    data = tmp_path / "srv"  # a data directory that already exists, as a host bind mount
    data.mkdir(mode=0o755)
    async with open_runtime(Settings(data_dir=data)) as rt:
        async with rt.engine.begin() as conn:  # a write, so the WAL and its index exist
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        seen = modes(data)
    assert {"amparo.db", "amparo.db-wal", "amparo.db-shm"} <= set(seen), seen
    assert {name: oct(mode) for name, mode in seen.items() if mode != 0o600} == {}


async def test_an_existing_readable_database_is_tightened(
    tmp_path: Path, usual_umask: None
) -> None:
    data = tmp_path / "var"
    async with open_runtime(Settings(data_dir=data)):
        pass
    for path in data.iterdir():
        if path.name.startswith("amparo.db"):
            path.chmod(0o644)  # as an earlier release left it
    (data / "amparo.db-wal").write_bytes(b"")
    (data / "amparo.db-wal").chmod(0o644)
    async with open_runtime(Settings(data_dir=data)):
        seen = modes(data)
    assert {name: oct(mode) for name, mode in seen.items() if mode != 0o600} == {}
