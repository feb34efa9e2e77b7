"""Encryption at rest (SECURITY.md R14, R15): pure tests, no database."""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import PublicKey, SealedBox
from nacl.pwhash import argon2id

from core.crypto import (
    CryptoError,
    Keyring,
    MissingKeyError,
    SealedMismatchError,
    Vault,
    ensure_keyring,
    generate_org_keypair,
    load_keyring,
    open_sealed,
    protect_private_key,
    seal,
    unprotect_private_key,
    write_keyring,
)

FAST = {"opslimit": argon2id.OPSLIMIT_INTERACTIVE, "memlimit": argon2id.MEMLIMIT_INTERACTIVE}
SECRET = b"+4915112345678"


def all_keys(ring: Keyring) -> list[bytes]:
    return [*ring.keks.values(), ring.index_key, ring.audit_key, ring.pepper]


def fingerprints(key: bytes) -> list[str]:
    """Textual forms a key could leak in."""
    return [base64.b64encode(key).decode(), key.hex(), repr(key)[2:-1]]


@pytest.fixture
def row() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
def sealed_field(vault: Vault, row: uuid.UUID) -> tuple[bytes, bytes, bytes]:
    """(dek, wrapped dek, field ciphertext) of channel_addresses.value_enc of ``row``."""
    dek = vault.new_dek()
    wrapped = vault.wrap_dek(dek, "channel_addresses", row)
    blob = vault.encrypt(dek, "channel_addresses", "value_enc", row, SECRET)
    return dek, wrapped, blob


# --- envelope encryption: a ciphertext is bound to its table, column and row ----------------


def test_a_field_round_trips(
    vault: Vault, row: uuid.UUID, sealed_field: tuple[bytes, ...]
) -> None:
    _, wrapped, blob = sealed_field
    dek = vault.unwrap_dek(wrapped, "channel_addresses", row)
    assert vault.decrypt(dek, "channel_addresses", "value_enc", row, blob) == SECRET
    assert SECRET not in blob and SECRET not in wrapped


def test_a_field_moved_to_another_row_fails(
    vault: Vault, sealed_field: tuple[bytes, bytes, bytes]
) -> None:
    dek, _, blob = sealed_field
    with pytest.raises(CryptoError, match="moved or altered"):
        vault.decrypt(dek, "channel_addresses", "value_enc", uuid.uuid4(), blob)


def test_a_field_moved_to_another_column_fails(
    vault: Vault, row: uuid.UUID, sealed_field: tuple[bytes, bytes, bytes]
) -> None:
    dek, _, blob = sealed_field
    with pytest.raises(CryptoError, match="moved or altered"):
        vault.decrypt(dek, "channel_addresses", "label_enc", row, blob)


def test_a_field_moved_to_another_table_fails(
    vault: Vault, row: uuid.UUID, sealed_field: tuple[bytes, bytes, bytes]
) -> None:
    dek, _, blob = sealed_field
    with pytest.raises(CryptoError, match="moved or altered"):
        vault.decrypt(dek, "trusted_contacts", "value_enc", row, blob)


def test_a_wrapped_data_key_moved_to_another_row_fails(
    vault: Vault, sealed_field: tuple[bytes, bytes, bytes]
) -> None:
    _, wrapped, _ = sealed_field
    with pytest.raises(CryptoError, match="ciphertext was moved"):
        vault.unwrap_dek(wrapped, "channel_addresses", uuid.uuid4())
    with pytest.raises(CryptoError, match="ciphertext was moved"):
        vault.unwrap_dek(wrapped, "defenders", uuid.uuid4())


def test_every_tampered_byte_is_detected(
    vault: Vault, row: uuid.UUID, sealed_field: tuple[bytes, bytes, bytes]
) -> None:
    dek, wrapped, blob = sealed_field
    for i in range(len(blob)):
        bad = blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :]
        with pytest.raises(CryptoError):
            vault.decrypt(dek, "channel_addresses", "value_enc", row, bad)
    for i in range(len(wrapped)):
        bad = wrapped[:i] + bytes([wrapped[i] ^ 0x01]) + wrapped[i + 1 :]
        with pytest.raises(CryptoError):  # a flipped version byte is a MissingKeyError
            vault.unwrap_dek(bad, "channel_addresses", row)


def test_every_truncation_is_a_crypto_error(
    vault: Vault, row: uuid.UUID, sealed_field: tuple[bytes, bytes, bytes]
) -> None:
    dek, wrapped, blob = sealed_field
    for n in range(len(blob)):
        with pytest.raises(CryptoError):
            vault.decrypt(dek, "channel_addresses", "value_enc", row, blob[:n])
    for n in range(len(wrapped)):
        with pytest.raises(CryptoError):
            vault.unwrap_dek(wrapped[:n], "channel_addresses", row)


def test_a_data_key_wrapped_by_a_missing_version_names_it(row: uuid.UUID) -> None:
    newer = Vault(Keyring.generate().with_new_kek())
    wrapped = newer.wrap_dek(newer.new_dek(), "defenders", row)
    with pytest.raises(MissingKeyError, match="key version 2 is not in the master key file"):
        Vault(Keyring.generate()).unwrap_dek(wrapped, "defenders", row)


def test_another_keyring_cannot_unwrap_and_says_so_without_leaking(
    tmp_path: Path, row: uuid.UUID
) -> None:
    mine, theirs = tmp_path / "mine.key", tmp_path / "theirs.key"
    write_keyring(mine, Keyring.generate())
    write_keyring(theirs, Keyring.generate())
    ours = Vault(load_keyring(mine))
    dek = ours.new_dek()
    wrapped = ours.wrap_dek(dek, "channel_addresses", row)
    blob = ours.encrypt(dek, "channel_addresses", "value_enc", row, SECRET)

    other = Vault(load_keyring(theirs))
    with pytest.raises(CryptoError, match="wrong master key") as caught:
        other.unwrap_dek(wrapped, "channel_addresses", row)
    message = str(caught.value)
    assert f"channel_addresses row {row}" in message
    assert SECRET.decode() not in message
    for key in [dek, *all_keys(ours.keyring), *all_keys(other.keyring)]:
        for form in fingerprints(key):
            assert form not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert blob  # the data itself is untouched by the failure


@given(plaintext=st.binary(max_size=4096), column=st.text(min_size=1, max_size=40))
def test_encrypt_then_decrypt_is_the_identity(plaintext: bytes, column: str) -> None:
    vault = Vault(_RING)
    row = uuid.uuid4()
    dek = vault.unwrap_dek(vault.wrap_dek(vault.new_dek(), "outbox", row), "outbox", row)
    blob = vault.encrypt(dek, "outbox", column, row, plaintext)
    assert vault.decrypt(dek, "outbox", column, row, blob) == plaintext
    assert len(blob) == 1 + 24 + len(plaintext) + 16


_RING = Keyring.generate()  # Hypothesis re-runs a test many times: no function-scoped fixture


# --- the master key file ------------------------------------------------------------------


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "master.key"
    with pytest.raises(MissingKeyError) as caught:
        load_keyring(path)
    assert str(path) in str(caught.value)


def test_ensure_keyring_without_create_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    with pytest.raises(MissingKeyError, match="not found"):
        ensure_keyring(path, create=False)
    assert not path.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_a_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    write_keyring(path, Keyring.generate())
    path.chmod(mode)
    with pytest.raises(CryptoError, match="chmod 600"):
        load_keyring(path)


def test_a_created_key_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    ring = ensure_keyring(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_keyring(path) == ring
    assert ensure_keyring(path, create=True) == ring  # an existing file is never replaced
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temporary left


def test_writing_a_key_file_is_atomic_and_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "master.key"
    synced: list[bool] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_keyring(path, Keyring.generate())
    assert synced == [False, True]  # the file, then the directory holding the rename


def test_an_exclusive_write_never_replaces_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = Keyring.generate()
    write_keyring(path, first, exclusive=True)
    with pytest.raises(CryptoError, match="already exists"):
        write_keyring(path, Keyring.generate(), exclusive=True)
    assert load_keyring(path) == first


def test_a_keyring_survives_json(keyring: Keyring) -> None:
    rotated = keyring.with_new_kek()
    assert Keyring.from_json(rotated.to_json()) == rotated
    assert rotated.only_current().keks == {2: rotated.keks[2]}


def _valid() -> dict[str, object]:
    return json.loads(Keyring.generate().to_json())  # type: ignore[no-any-return]


def _mutated(**changes: object) -> str:
    data = _valid()
    data.update(changes)
    return json.dumps(data)


MALFORMED = {
    "empty": "",
    "not json": "hello",
    "a list": "[]",
    "null": "null",
    "no keys": "{}",
    "keks a list": _mutated(keks=["AAAA"]),
    "bad base64": _mutated(index_key="!!not base64!!"),
    "short key": _mutated(audit_key=base64.b64encode(b"short").decode()),
    "current absent": _mutated(current=7),
    "current not a number": _mutated(current="one"),
    "version not a number": _mutated(keks={"one": base64.b64encode(bytes(32)).decode()}),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_key_file_is_a_clear_crypto_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "master.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(CryptoError, match="master key file is malformed"):
        load_keyring(path)


def test_a_binary_key_file_is_a_crypto_error_that_quotes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(b"\xff\xfe\x9c" + os.urandom(64))
    path.chmod(0o600)
    with pytest.raises(CryptoError, match="malformed") as caught:
        load_keyring(path)
    assert "0xff" not in str(caught.value)


def test_reprs_carry_no_key_material(keyring: Keyring, vault: Vault) -> None:
    rotated = keyring.with_new_kek()
    texts = [repr(keyring), str(keyring), repr(vault), str(vault), repr(rotated)]
    texts.append(repr(Vault(rotated)))
    for key in all_keys(rotated):
        for form in fingerprints(key):
            for text in texts:
                assert form not in text
    assert repr(rotated) == "Keyring(current=2, versions=[1, 2])"


# --- blind indexes --------------------------------------------------------------------------


def test_a_blind_index_ignores_width_case_and_spacing(vault: Vault) -> None:
    alice = vault.blind_index("telegram", "alice")
    assert vault.blind_index("telegram", "Ａlice") == alice  # fullwidth A (NFKC)
    assert vault.blind_index("telegram", " ALICE ") == alice
    assert vault.blind_index("telegram", "ａｌｉｃｅ") == alice
    assert vault.blind_index("telegram", "alicia") != alice
    assert len(alice) == 32


def test_a_blind_index_differs_across_kinds_and_index_keys(vault: Vault) -> None:
    alice = vault.blind_index("telegram", "alice")
    assert vault.blind_index("signal", "alice") != alice
    assert vault.blind_index("telegra", "malice") != alice  # kind and value are separated
    assert Vault(Keyring.generate()).blind_index("telegram", "alice") != alice


def test_a_new_kek_keeps_blind_indexes(vault: Vault, keyring: Keyring) -> None:
    rotated = Vault(keyring.with_new_kek().only_current())
    assert rotated.blind_index("telegram", "alice") == vault.blind_index("telegram", "alice")


# --- sealed boxes (R14) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def org_keys() -> tuple[bytes, bytes]:
    return generate_org_keypair()


def test_a_sealed_item_round_trips(org_keys: tuple[bytes, bytes]) -> None:
    public, private = org_keys
    org, record = uuid.uuid4(), uuid.uuid4()
    body = {"narrative": "ñandú 🦤", "lat": -34.6}
    blob = seal(public, org_id=org, record_id=record, kind="report", body=body)
    assert "ñandú".encode() not in blob
    assert open_sealed(private, blob, org_id=org, record_id=record, kind="report") == body


def test_sealed_items_swapped_between_records_are_detected(
    org_keys: tuple[bytes, bytes],
) -> None:
    public, private = org_keys
    org, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    a = seal(public, org_id=org, record_id=first, kind="report", body="A")
    b = seal(public, org_id=org, record_id=second, kind="report", body="B")
    with pytest.raises(SealedMismatchError, match="swapped"):
        open_sealed(private, a, org_id=org, record_id=second, kind="report")
    with pytest.raises(SealedMismatchError):
        open_sealed(private, b, org_id=org, record_id=first, kind="report")
    with pytest.raises(SealedMismatchError):
        open_sealed(private, a, org_id=uuid.uuid4(), record_id=first, kind="report")
    with pytest.raises(SealedMismatchError):
        open_sealed(private, a, org_id=org, record_id=first, kind="evidence")


def test_another_organisation_key_cannot_open(org_keys: tuple[bytes, bytes]) -> None:
    public, _ = org_keys
    _, other_private = generate_org_keypair()
    org, record = uuid.uuid4(), uuid.uuid4()
    blob = seal(public, org_id=org, record_id=record, kind="report", body="secret narrative")
    with pytest.raises(CryptoError, match="not sealed to this organisation key") as caught:
        open_sealed(other_private, blob, org_id=org, record_id=record, kind="report")
    assert not isinstance(caught.value, SealedMismatchError)
    assert "secret narrative" not in str(caught.value)


@pytest.mark.parametrize("plaintext", [b"not json", b"[1, 2]", b"\xff\xfe", b'{"org": "x"}', b""])
def test_a_foreign_sealed_layout_is_a_crypto_error(
    org_keys: tuple[bytes, bytes], plaintext: bytes
) -> None:
    """Anyone holding the public key can seal anything to it."""
    public, private = org_keys
    blob = bytes(SealedBox(PublicKey(public)).encrypt(plaintext))
    with pytest.raises(SealedMismatchError, match="malformed"):
        open_sealed(private, blob, org_id=uuid.uuid4(), record_id=uuid.uuid4(), kind="report")


@pytest.mark.parametrize("blob", [b"", b"short", b"\x00" * 48])
def test_garbage_is_not_a_sealed_item(org_keys: tuple[bytes, bytes], blob: bytes) -> None:
    _, private = org_keys
    with pytest.raises(CryptoError):
        open_sealed(private, blob, org_id=uuid.uuid4(), record_id=uuid.uuid4(), kind="report")


def test_a_protected_private_key_round_trips(org_keys: tuple[bytes, bytes]) -> None:
    _, private = org_keys
    blob = protect_private_key(private, "correct horse battery staple", **FAST)
    assert private not in blob
    assert unprotect_private_key(blob, "correct horse battery staple") == private


def test_a_wrong_passphrase_is_refused(org_keys: tuple[bytes, bytes]) -> None:
    _, private = org_keys
    blob = protect_private_key(private, "correct horse battery staple", **FAST)
    with pytest.raises(CryptoError, match="wrong passphrase"):
        unprotect_private_key(blob, "correct horse battery stapler")


@pytest.mark.parametrize("blob", [b"", b"P1", b"P1" + b"x" * 20, b"XX" + b"x" * 80])
def test_a_malformed_protected_key_is_a_crypto_error(blob: bytes) -> None:
    with pytest.raises(CryptoError):
        unprotect_private_key(blob, "anything")
