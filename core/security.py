"""Secrets people type: responder passwords, TOTP seeds, defenders' PINs, one-time codes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # Argon2id with the library's RFC 9106 low-memory profile

# No 0/O, 1/I/L: codes are read aloud and typed on small screens.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def generate_code(length: int = 8) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _peppered(pin: str, pepper: bytes) -> bytes:
    # The pepper lives in the master key file, so a database dump alone cannot brute-force PINs.
    return hmac.new(pepper, pin.encode(), hashlib.sha256).digest()


def hash_pin(pin: str, pepper: bytes) -> str:
    return _hasher.hash(_peppered(pin, pepper))


def verify_pin(stored: str, pin: str, pepper: bytes) -> bool:
    try:
        return _hasher.verify(stored, _peppered(pin, pepper))
    except (VerificationError, InvalidHashError):
        return False


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, issuer: str = "Amparo desk") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)
