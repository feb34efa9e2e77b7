from __future__ import annotations

import pyotp

from core.security import (
    CODE_ALPHABET,
    generate_code,
    hash_password,
    hash_pin,
    new_totp_secret,
    totp_uri,
    verify_password,
    verify_pin,
)


def test_it_hashes_passwords_with_argon2id() -> None:
    stored = hash_password("hunter2 hunter2")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "hunter2 hunter2")
    assert not verify_password(stored, "hunter3 hunter3")
    assert not verify_password("not a hash", "x")


def test_it_peppers_pins() -> None:
    pepper, other = b"p" * 32, b"q" * 32
    stored = hash_pin("4821", pepper)
    assert verify_pin(stored, "4821", pepper)
    assert not verify_pin(stored, "4821", other)  # a dump without the key file is not enough
    assert not verify_pin(stored, "4822", pepper)


def test_it_makes_unambiguous_codes() -> None:
    codes = {generate_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == 8 and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert not set("01OIL") & set(CODE_ALPHABET)


def test_it_provisions_working_totp() -> None:
    secret = new_totp_secret()
    uri = totp_uri(secret, "alice")
    totp = pyotp.parse_uri(uri)
    assert totp.verify(pyotp.TOTP(secret).now())
