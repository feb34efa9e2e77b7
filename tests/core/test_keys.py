"""Master key creation and KEK rotation (SECURITY.md R15), on SQLite and PostgreSQL."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import core.keys
from core.crypto import (
    FOLLOW_S,
    CryptoError,
    MissingKeyError,
    Vault,
    generate_org_keypair,
    load_keyring,
    seal,
)
from core.db import transaction
from core.keys import _rotation_lock, encrypted_models, init_keys, rotate
from core.models import ChannelAddress, Defender, Organisation, OutboxMessage, Report

Sessions = async_sessionmaker[AsyncSession]
# (table, row id) -> (wrapped dek, {encrypted column: ciphertext}, other fields worth keeping)
Snapshot = dict[tuple[str, uuid.UUID], tuple[bytes | None, dict[str, bytes | None], Any]]


@pytest.fixture(autouse=True)
def no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    """No process follows these tests' key files (the one test with a server sets it back)."""
    monkeypatch.setattr(core.keys, "SETTLE_S", 0.0)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "master.key"
    init_keys(path)
    return path


def vault_from(key_file: Path) -> Vault:
    return Vault(load_keyring(key_file))


def enc_columns(model: type[Any]) -> list[str]:
    return sorted(c.key for c in model.__mapper__.column_attrs if c.key.endswith("_enc"))


async def populate(sessions: Sessions, vault: Vault, *, addresses: int = 1) -> dict[str, str]:
    """One record of each kind with encrypted fields; returns their plaintexts by column."""
    public, _ = generate_org_keypair()
    plain: dict[str, str] = {}
    async with transaction(sessions) as s:
        org = Organisation(name=f"Desk {uuid.uuid4().hex[:6]}", public_key=public)
        s.add(org)
        await s.flush()
        defender = Defender(org_id=org.id, handle=f"heron-{uuid.uuid4().hex[:8]}")
        defender.put(vault, "settings_enc", '{"code_phrase": "the tea is cold"}')
        s.add(defender)
        await s.flush()
        for n in range(addresses):
            address = ChannelAddress(channel="telegram", defender_id=defender.id)
            value = f"chat-{n}-{uuid.uuid4().hex[:6]}"
            address.put(vault, "value_enc", value)
            address.blind_index = vault.address_index("telegram", value)
            s.add(address)
            plain[f"channel_addresses.value_enc.{address.ensure_id()}"] = value
        outbox = OutboxMessage(priority=1, channel="telegram", idempotency_key=uuid.uuid4().hex)
        outbox.put(vault, "payload_enc", "are you safe?")
        delivered = OutboxMessage(priority=1, channel="telegram", idempotency_key=uuid.uuid4().hex)
        delivered.put(vault, "payload_enc", "gone")
        delivered.shred("payload_enc")  # no data key left: rotation must leave it alone
        report_id = uuid.uuid4()
        report = Report(
            id=report_id,
            org_id=org.id,
            defender_id=defender.id,
            receipt_code=uuid.uuid4().hex[:12],
            sealed_body=seal(public, org_id=org.id, record_id=report_id, kind="report", body="x"),
        )
        report.put(vault, "triage_enc", '{"act": "threat", "urgency": "high"}')
        s.add_all([outbox, delivered, report])
    plain[f"defenders.settings_enc.{defender.id}"] = '{"code_phrase": "the tea is cold"}'
    plain[f"outbox.payload_enc.{outbox.id}"] = "are you safe?"
    plain[f"reports.triage_enc.{report.id}"] = '{"act": "threat", "urgency": "high"}'
    return plain


async def snapshot(sessions: Sessions) -> Snapshot:
    out: Snapshot = {}
    async with sessions() as s:
        for table, model in encrypted_models():
            for obj in (await s.execute(select(model))).scalars():
                columns = {c: getattr(obj, c) for c in enc_columns(model)}
                extra = (getattr(obj, "blind_index", None), getattr(obj, "sealed_body", None))
                out[(table, obj.id)] = (obj.dek, columns, extra)
    return out


async def decrypt_all(sessions: Sessions, vault: Vault) -> dict[str, str]:
    out: dict[str, str] = {}
    async with sessions() as s:
        for table, model in encrypted_models():
            for obj in (await s.execute(select(model))).scalars():
                for column in enc_columns(model):
                    text = obj.get_text(vault, column) if obj.dek is not None else None
                    if text is not None:
                        out[f"{table}.{column}.{obj.id}"] = text
    return out


def versions(snap: Snapshot) -> set[int]:
    return {Vault.kek_version(dek) for dek, _, _ in snap.values() if dek is not None}


# --- creating the key file ------------------------------------------------------------------


def test_init_keys_creates_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    ring = init_keys(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_keyring(path) == ring
    assert ring.current == 1


def test_init_keys_never_replaces_a_key_file(key_file: Path) -> None:
    before = key_file.read_bytes()
    with pytest.raises(CryptoError, match="already exists; refusing to replace it") as caught:
        init_keys(key_file)
    assert str(key_file) in str(caught.value)
    assert key_file.read_bytes() == before


def test_every_encrypted_model_is_discovered() -> None:
    tables = [table for table, _ in encrypted_models()]
    assert tables == sorted(tables)
    assert set(tables) >= {
        "channel_addresses",
        "conversations",
        "defenders",
        "outbox",
        "reports",
        "responders",
        "trusted_contacts",
    }
    assert "organisations" not in tables


# --- rotation -------------------------------------------------------------------------------


async def test_rotation_rewraps_every_data_key_and_leaves_data_alone(
    sessions: Sessions, key_file: Path
) -> None:
    old_ring = load_keyring(key_file)
    plain = await populate(sessions, Vault(old_ring), addresses=3)
    before = await snapshot(sessions)

    report = await rotate(sessions, key_file, batch=2)

    ring = load_keyring(key_file)
    assert ring.current == 2 and set(ring.keks) == {2}  # the old KEK is gone from the file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (report.old_version, report.new_version, report.rows_rewrapped) == (1, 2, 6)
    assert {t: n for t, n in report.tables.items() if n} == {
        "channel_addresses": 3,
        "defenders": 1,
        "outbox": 1,
        "reports": 1,
    }
    after = await snapshot(sessions)
    assert after.keys() == before.keys()
    for key, (dek, columns, extra) in after.items():
        old_dek, old_columns, old_extra = before[key]
        assert columns == old_columns  # ciphertexts byte-for-byte unchanged
        assert extra == old_extra  # blind indexes and sealed bodies too
        if old_dek is None:
            assert dek is None  # a shredded row stays shredded
        else:
            assert dek is not None and dek != old_dek
            assert Vault.kek_version(dek) == 2
    assert await decrypt_all(sessions, Vault(ring)) == plain

    # The index key is not rotated: lookups by blind index still find the addresses.
    value = next(v for k, v in plain.items() if k.startswith("channel_addresses"))
    async with sessions() as s:
        found = await s.scalar(
            select(ChannelAddress).where(
                ChannelAddress.blind_index == Vault(ring).address_index("telegram", value)
            )
        )
    assert found is not None and found.get_text(Vault(ring), "value_enc") == value


async def test_the_old_keyring_cannot_unwrap_after_rotation(
    sessions: Sessions, key_file: Path
) -> None:
    old = vault_from(key_file)
    await populate(sessions, old)
    await rotate(sessions, key_file)
    async with sessions() as s:
        defender = (await s.execute(select(Defender))).scalar_one()
    with pytest.raises(MissingKeyError, match="key version 2 is not in the master key file"):
        defender.get(old, "settings_enc")


async def test_rotating_twice_works(sessions: Sessions, key_file: Path) -> None:
    plain = await populate(sessions, vault_from(key_file), addresses=2)
    before = await snapshot(sessions)
    first = await rotate(sessions, key_file)
    second = await rotate(sessions, key_file)
    assert (first.old_version, first.new_version) == (1, 2)
    assert (second.old_version, second.new_version, second.rows_rewrapped) == (2, 3, 5)
    ring = load_keyring(key_file)
    assert set(ring.keks) == {3}
    after = await snapshot(sessions)
    assert versions(after) == {3}
    assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in before.items()}
    assert await decrypt_all(sessions, Vault(ring)) == plain


async def test_rotating_an_empty_database_only_replaces_the_kek(
    sessions: Sessions, key_file: Path
) -> None:
    old = load_keyring(key_file)
    report = await rotate(sessions, key_file)
    ring = load_keyring(key_file)
    assert report.rows_rewrapped == 0 and set(ring.keks) == {2}
    assert ring.keks[2] != old.keks[1]
    assert (ring.index_key, ring.audit_key, ring.pepper) == (
        old.index_key,
        old.audit_key,
        old.pepper,
    )


async def test_a_crash_mid_rotation_leaves_every_row_readable(
    sessions: Sessions, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = await populate(sessions, vault_from(key_file), addresses=4)
    before = await snapshot(sessions)
    real_rewrap = Vault.rewrap
    calls = 0

    def crash_on_second_batch(self: Vault, blob: bytes, table: str, row_id: uuid.UUID) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("power cut")
        return real_rewrap(self, blob, table, row_id)

    monkeypatch.setattr(Vault, "rewrap", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="power cut"):
        await rotate(sessions, key_file, batch=1)
    monkeypatch.undo()

    on_disk = load_keyring(key_file)
    assert on_disk.current == 2 and set(on_disk.keks) == {1, 2}  # old KEK kept until the end
    midway = await snapshot(sessions)
    assert versions(midway) == {1, 2}  # the first batch committed, the rest did not
    assert await decrypt_all(sessions, Vault(on_disk)) == plain

    report = await rotate(sessions, key_file, batch=1)
    ring = load_keyring(key_file)
    assert (report.old_version, report.new_version) == (2, 3)
    assert report.rows_rewrapped == 7  # every row, whichever version it was left at
    assert set(ring.keks) == {3}
    after = await snapshot(sessions)
    assert versions(after) == {3}
    assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in before.items()}
    assert await decrypt_all(sessions, Vault(ring)) == plain


async def test_two_rotations_cannot_run_at_once(sessions: Sessions, key_file: Path) -> None:
    before = key_file.read_bytes()
    with (
        _rotation_lock(key_file),
        pytest.raises(CryptoError, match="rotation .* is already running"),
    ):
        await rotate(sessions, key_file)
    assert key_file.read_bytes() == before


async def test_rotation_refuses_a_missing_key_file(sessions: Sessions, tmp_path: Path) -> None:
    path = tmp_path / "keys" / "absent.key"
    with pytest.raises(MissingKeyError, match=str(path)):
        await rotate(sessions, path)
    assert not path.parent.exists()  # not even a lock file


async def test_rotation_gives_up_while_an_old_keyring_keeps_writing(
    sessions: Sessions, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server still on the old key file creates rows the pruned file could not open."""
    stale = vault_from(key_file)
    plain = await populate(sessions, stale)
    async with sessions() as s:
        org_id = (await s.execute(select(Organisation.id))).scalar_one()
    real_rewrap_table = core.keys._rewrap_table

    async def while_a_stale_server_writes(sessions: Sessions, table: str, *args: Any) -> int:
        n = await real_rewrap_table(sessions, table, *args)
        if table == "reports":  # every pass, one more row appears under KEK 1
            late = Defender(org_id=org_id, handle=f"late-{uuid.uuid4().hex[:8]}")
            late.put(stale, "settings_enc", "late")
            async with transaction(sessions) as s:
                s.add(late)
            plain[f"defenders.settings_enc.{late.id}"] = "late"
        return n

    monkeypatch.setattr(core.keys, "_rewrap_table", while_a_stale_server_writes)
    with pytest.raises(CryptoError, match="stop every process using the old key file"):
        await rotate(sessions, key_file)
    monkeypatch.undo()
    ring = load_keyring(key_file)
    assert set(ring.keks) == {1, 2}  # nothing pruned: every row, late ones too, still opens
    assert await decrypt_all(sessions, Vault(ring)) == plain


async def test_a_running_server_follows_a_rotation_and_loses_nothing(
    sessions: Sessions, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`amparo serve` keeps running through `amparo keys rotate`: rows it wrote before are
    rewrapped and still open; rows it writes afterwards are wrapped with the new key, so they
    still open once the old key has left the file (they were lost for good before)."""
    monkeypatch.setattr(core.keys, "SETTLE_S", 2 * FOLLOW_S)
    running = Vault(load_keyring(key_file), key_file=key_file)  # what the server holds
    await populate(sessions, running)
    await rotate(sessions, key_file)
    public, _ = generate_org_keypair()
    async with transaction(sessions) as s:  # a defender enrols after the rotation
        org = Organisation(name="Late desk", public_key=public)
        s.add(org)
        await s.flush()
        late = Defender(org_id=org.id, handle="heron-late")
        late.put(running, "settings_enc", '{"code_phrase": "tea"}')
        s.add(late)
    restarted = vault_from(key_file)
    assert len(restarted.keyring.keks) == 1  # the old key is gone from the file
    async with sessions() as s:
        for vault in (running, restarted):  # the same server reads the rewrapped rows too
            rows = (await s.execute(select(Defender))).scalars().all()
            texts = {d.handle: d.get_text(vault, "settings_enc") for d in rows}
            assert texts["heron-late"] == '{"code_phrase": "tea"}'
            assert '{"code_phrase": "the tea is cold"}' in texts.values()
