"""The command line as an operator uses it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from core.crypto import Vault, load_keyring, open_sealed, seal, unprotect_private_key
from core.db import create_engine, sessionmaker, transaction
from core.defenders import find_address, new_address
from core.models import AuditEntry, Organisation, Responder
from core.security import verify_password

PASSPHRASE = "correct horse battery staple"


def amparo(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AMPARO_")}
    return subprocess.run(
        [sys.executable, "-m", "amparo", *args],
        env={**clean, "LANG": "C.UTF-8", **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> dict[str, str]:
    return {"AMPARO_DATA_DIR": str(tmp_path / "var"), "AMPARO_DATABASE_URL": db_url}


def test_it_creates_the_master_key_file_once(tmp_path: Path) -> None:
    env = {"AMPARO_DATA_DIR": str(tmp_path / "var")}
    first = amparo(env, "keys", "init", "--json")
    assert first.returncode == 0, first.stderr
    key_file = Path(json.loads(first.stdout)["key_file"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    load_keyring(key_file)
    again = amparo(env, "keys", "init")
    assert_one_line_error(again, "already exists")


async def test_it_creates_an_org_and_a_responder_who_can_log_in(
    env: dict[str, str], db_url: str, backend: str, tmp_path: Path
) -> None:
    if backend == "postgresql":
        refused = amparo(env, "org", "create", "Desk", stdin=PASSPHRASE)
        assert_one_line_error(refused, "amparo db upgrade")
        assert amparo(env, "db", "upgrade").returncode == 0
    org = amparo(env, "org", "create", "Example Desk", "--json", stdin=PASSPHRASE + "\n")
    assert org.returncode == 0, org.stderr
    assert json.loads(org.stdout)["name"] == "Example Desk"
    user = amparo(
        env, "user", "create", "alice", "--org", "Example Desk", "--role", "admin", "--json"
    )
    assert user.returncode == 0, user.stderr
    created = json.loads(user.stdout)
    assert created["totp_uri"].startswith("otpauth://totp/")
    assert "secret=" in created["totp_uri"]

    vault = Vault(load_keyring(tmp_path / "var" / "master.key"))
    engine = create_engine(db_url)
    try:
        async with sessionmaker(engine)() as s:
            alice = (await s.execute(select(Responder))).scalar_one()
            actions = (await s.execute(select(AuditEntry.action))).scalars().all()
    finally:
        await engine.dispose()
    assert verify_password(alice.password_hash, created["password"])
    assert alice.role.value == "admin" and alice.must_change_password
    secret = alice.get_text(vault, "totp_secret_enc")
    assert secret and f"secret={secret}" in created["totp_uri"]
    assert created["password"] not in str(alice.password_hash)
    assert list(actions) == ["org.create", "responder.create"]

    duplicate = amparo(env, "user", "create", "alice", "--org", "Example Desk")
    assert_one_line_error(duplicate, "alice already exists")
    unknown = amparo(env, "user", "create", "bob", "--org", "Nowhere")
    assert_one_line_error(unknown, "no organisation named Nowhere")
    short = amparo(env, "org", "create", "Other", stdin="short\n")
    assert_one_line_error(short, "at least 12 characters")


def test_it_says_so_when_the_database_is_unreachable(tmp_path: Path) -> None:
    env = {
        "AMPARO_DATA_DIR": str(tmp_path / "var"),
        "AMPARO_DATABASE_URL": "postgresql+asyncpg://amparo:s3cret@127.0.0.1:1/amparo",
    }
    result = amparo(env, "db", "upgrade")
    assert_one_line_error(result, "cannot reach the database")
    assert "s3cret" not in result.stderr


def test_it_says_so_when_the_data_dir_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = amparo({"AMPARO_DATA_DIR": str(blocker / "var")}, "db", "upgrade")
    assert_one_line_error(result, "cannot create the data directory")


def test_it_refuses_production_without_a_master_key_file(tmp_path: Path) -> None:
    env = {"AMPARO_DATA_DIR": str(tmp_path / "var"), "AMPARO_MODE": "production"}
    result = amparo(env, "db", "upgrade")
    assert_one_line_error(result, "amparo keys init")
    assert not (tmp_path / "var" / "master.key").exists()


def test_it_rejects_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    result = amparo({"AMPARO_DATA_DIR": str(tmp_path), "AMPARO_PORT": "seventy"}, "db", "upgrade")
    assert_one_line_error(result, "AMPARO_PORT")


def test_a_setting_refused_with_another_is_named_in_one_line(tmp_path: Path) -> None:
    env = {
        "AMPARO_DATA_DIR": str(tmp_path),
        "AMPARO_MODE": "production",
        "AMPARO_TELEGRAM_TOKEN": "123:abc",
        "AMPARO_TELEGRAM_WEBHOOK_URL": "http://desk.example.org/hooks/telegram",
        "AMPARO_TELEGRAM_WEBHOOK_SECRET": "s" * 40,
    }
    result = amparo(env, "worker")
    assert_one_line_error(result, "amparo: AMPARO_TELEGRAM_WEBHOOK_URL must start with https://")
    env["AMPARO_TELEGRAM_WEBHOOK_URL"] = "https://desk.example.org/hooks/telegram"
    env["AMPARO_TELEGRAM_WEBHOOK_SECRET"] = "q1Zx+/8rT0kPq1Zx+/8rT0kPq1Zx+/8rT0kPq1Zx+/8="
    result = amparo(env, "worker")
    assert_one_line_error(result, "amparo: AMPARO_TELEGRAM_WEBHOOK_SECRET may hold only")
    assert "q1Zx" not in result.stderr


def test_it_answers_in_the_operators_language(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = amparo(
        {"AMPARO_DATA_DIR": str(blocker / "var"), "LANG": "es_ES.UTF-8"}, "db", "upgrade"
    )
    assert_one_line_error(result, "no se puede crear")


async def test_it_rotates_keys_and_verifies_the_audit_log(tmp_path: Path) -> None:
    env = {"AMPARO_DATA_DIR": str(tmp_path / "var")}
    assert amparo(env, "org", "create", "Desk", stdin=PASSPHRASE).returncode == 0
    user = amparo(env, "user", "create", "bob", "--org", "Desk", "--json")
    totp_uri = json.loads(user.stdout)["totp_uri"]
    head = amparo(env, "audit", "head").stdout.strip()
    assert json.loads(head)["seq"] == 2

    rotated = amparo(env, "keys", "rotate", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["new_version"] == 2
    ring = load_keyring(tmp_path / "var" / "master.key")
    assert sorted(ring.keks) == [2]  # the old key is gone from the file
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'amparo.db'}")
    try:
        async with sessionmaker(engine)() as s:
            bob = (await s.execute(select(Responder))).scalar_one()
    finally:
        await engine.dispose()
    secret = bob.get_text(Vault(ring), "totp_secret_enc")
    assert secret and f"secret={secret}" in totp_uri

    verified = amparo(env, "audit", "verify", "--head", head, "--json")
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout) == {
        "ok": True,
        "checked": 3,
        "first_bad_seq": None,
        "reason": None,
    }
    broken = amparo(env, "audit", "verify", "--head", '{"seq": 9, "hash": "00"}')
    assert broken.returncode == 1
    assert "entry" in broken.stdout
    assert_one_line_error(amparo(env, "audit", "verify", "--head", "nonsense"), "not valid")


def test_the_database_in_an_existing_data_dir_is_not_readable_by_others(tmp_path: Path) -> None:
    data = tmp_path / "srv"  # /srv/amparo, a host bind mount: not created by amparo, 0755
    data.mkdir()
    data.chmod(0o755)
    old_umask = os.umask(0o022)  # what most services run with; the process inherits it
    try:
        result = amparo({"AMPARO_DATA_DIR": str(data)}, "db", "upgrade")
    finally:
        os.umask(old_umask)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((data / "amparo.db").stat().st_mode) == 0o600


def test_a_bad_token_or_log_level_is_one_line_that_does_not_echo_it(tmp_path: Path) -> None:
    env = {"AMPARO_DATA_DIR": str(tmp_path), "AMPARO_TELEGRAM_TOKEN": "paste-here-CANARY"}
    result = amparo(env, "worker")
    assert_one_line_error(result, "invalid setting AMPARO_TELEGRAM_TOKEN: not a bot token")
    assert "CANARY" not in result.stderr
    result = amparo({"AMPARO_DATA_DIR": str(tmp_path), "AMPARO_LOG_LEVEL": "loud"}, "worker")
    assert_one_line_error(result, "invalid setting AMPARO_LOG_LEVEL: must be one of DEBUG")


async def test_it_rotates_the_address_index_key(tmp_path: Path) -> None:
    """``keys rotate-index``: the addresses are found with the new key only, and the audit log
    says so (SECURITY.md R15)."""
    env = {"AMPARO_DATA_DIR": str(tmp_path / "var")}
    assert amparo(env, "org", "create", "Desk", stdin=PASSPHRASE).returncode == 0
    key_file, url = (
        tmp_path / "var" / "master.key",
        f"sqlite+aiosqlite:///{tmp_path / 'var' / 'amparo.db'}",
    )
    old = Vault(load_keyring(key_file))
    engine = create_engine(url)
    try:
        async with transaction(sessionmaker(engine)) as s:
            s.add(new_address(old, "signal", "+573001112233"))
    finally:
        await engine.dispose()
    rotated = amparo(env, "keys", "rotate-index", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {"addresses_reindexed": 1}
    new = Vault(load_keyring(key_file))
    engine = create_engine(url)
    try:
        async with sessionmaker(engine)() as s:
            found = await find_address(s, "signal", new.address_index("signal", "+573001112233"))
            stale = await find_address(s, "signal", old.address_index("signal", "+573001112233"))
            actions = (await s.execute(select(AuditEntry.action))).scalars().all()
    finally:
        await engine.dispose()
    assert found is not None and stale is None
    assert "keys.rotate_index" in actions
    assert amparo(env, "audit", "verify", "--json").returncode == 0


async def test_an_org_key_made_on_a_responders_machine_is_the_one_the_server_keeps(
    tmp_path: Path,
) -> None:
    """SECURITY.md R14: the server never makes the organisation's private key in production:
    ``org keypair`` on a workstation, then ``org create --key-file`` on the server, which
    stores what it was given (the private key only under the passphrase)."""
    workstation = {"AMPARO_DATA_DIR": str(tmp_path / "laptop")}
    secret_file = tmp_path / "passphrase"
    secret_file.write_text(PASSPHRASE + "\n")
    pair = tmp_path / "desk.key"
    made = amparo(workstation, "org", "keypair", str(pair), "--passphrase-file", str(secret_file))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(pair.stat().st_mode) == 0o600
    again = amparo(workstation, "org", "keypair", str(pair), "--passphrase-file", str(secret_file))
    assert_one_line_error(again, "already exists")  # never replaced: reports sealed to it

    server = {"AMPARO_DATA_DIR": str(tmp_path / "var"), "AMPARO_MODE": "production"}
    assert amparo(server, "keys", "init").returncode == 0
    refused = amparo(server, "org", "create", "Desk", stdin=PASSPHRASE + "\n")
    assert_one_line_error(refused, "amparo org keypair")
    bad = tmp_path / "bad.key"
    bad.write_text('{"format": "amparo-org-key-1", "public_key": "AAAA"}')
    assert_one_line_error(
        amparo(server, "org", "create", "Desk", "--key-file", str(bad)), "key pair made by Amparo"
    )
    created = amparo(server, "org", "create", "Desk", "--key-file", str(pair), "--json")
    assert created.returncode == 0, created.stderr
    given = json.loads(pair.read_text())
    assert json.loads(created.stdout)["public_key"] == given["public_key"]

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'amparo.db'}")
    try:
        async with sessionmaker(engine)() as s:
            org = (await s.execute(select(Organisation))).scalar_one()
    finally:
        await engine.dispose()
    assert org.protected_private_key == base64.b64decode(given["protected_private_key"])
    private = unprotect_private_key(org.protected_private_key, PASSPHRASE)
    assert org.public_key is not None
    sealed = seal(org.public_key, org_id=org.id, record_id=org.id, kind="report", body="canary")
    assert open_sealed(private, sealed, org_id=org.id, record_id=org.id, kind="report") == "canary"
