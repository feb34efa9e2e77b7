"""Encryption at rest: master keyring, per-record data keys, blind indexes and sealed boxes.

Two kinds of secret (DESIGN.md, "Data protection"):

1. What the server must use is encrypted with a per-record data key (DEK) under
   XChaCha20-Poly1305; the associated data binds ``table|column|row|version`` so a ciphertext
   copied to another row or column fails to open. DEKs are wrapped by a key-encryption key (KEK)
   from the master key file, never the database. Rotation rewraps DEKs and leaves data untouched.
2. What only the desk reads is sealed (libsodium sealed box) to the organisation's public key.
   Sealed boxes carry no associated data, so the organisation and record ids travel inside the
   plaintext and are checked after opening.

The keyring and its file are in ``core.keyring``, sealed boxes in ``core.sealing``; their names
are re-exported here, so ``from core.crypto import …`` serves for all of it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
import unicodedata
import uuid
from collections.abc import Sequence
from pathlib import Path

from nacl import bindings, utils
from nacl._sodium import ffi as _ffi  # the libsodium PyNaCl itself calls, for seal_many
from nacl._sodium import lib as _lib
from nacl.exceptions import CryptoError as NaclCryptoError

from core.i18n import operator_gettext as _
from core.keyring import (
    KEY_BYTES,
    CryptoError,
    Keyring,
    MissingKeyError,
    ensure_keyring,
    load_keyring,
    write_keyring,
)
from core.sealing import (
    SealedMismatchError,
    generate_org_keypair,
    open_sealed,
    protect_private_key,
    seal,
    unprotect_private_key,
)

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "CryptoError",
    "Keyring",
    "MissingKeyError",
    "SealedMismatchError",
    "Vault",
    "ensure_keyring",
    "generate_org_keypair",
    "load_keyring",
    "normalise",
    "open_sealed",
    "protect_private_key",
    "seal",
    "unprotect_private_key",
    "write_keyring",
]

NONCE_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_ABYTES = bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
_WRAP = b"K1"  # wrapped DEK: magic, u32 KEK version, nonce, ciphertext
_FIELD = b"\x01"  # field ciphertext: format byte, nonce, ciphertext
_FIELD_VERSION = 1


def _aead_encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = utils.random(NONCE_BYTES)
    ct = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    return nonce + ct


def _aead_decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES:
        raise NaclCryptoError("truncated ciphertext")  # libsodium would raise ValueError
    nonce, ct = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
    plaintext: bytes = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, key)
    return plaintext


def normalise(value: str) -> str:
    """The form a blind index is computed on: NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", value).strip().casefold()


FOLLOW_S = 1.0  # how stale a running process's view of the key file may be


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    """What changes when the key file is replaced (it is written by rename)."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class Vault:
    """Every operation on data the server must use, bound to one keyring."""

    def __init__(self, keyring: Keyring, *, key_file: Path | None = None) -> None:
        self.keyring = keyring
        # A long-running process follows ``amparo keys rotate`` (core.keys): new data keys
        # are wrapped with the file's current key within FOLLOW_S, and a key version it
        # has not seen yet is looked for in the file at once.
        self._file, self._stamp = key_file, _stamp(key_file)
        self._next_look = time.monotonic() + FOLLOW_S

    def follow(self, *, now: bool = False) -> None:
        """Read the key file again if it changed (one stat at most every FOLLOW_S)."""
        if self._file is None or (not now and time.monotonic() < self._next_look):
            return
        self._next_look = time.monotonic() + FOLLOW_S
        stamp = _stamp(self._file)
        if stamp is None or stamp == self._stamp:
            return
        try:
            self.keyring = load_keyring(self._file)
        except CryptoError:  # mid-write or damaged: keep the keys in memory, look again later
            return
        self._stamp = stamp

    def __repr__(self) -> str:
        return f"Vault({self.keyring!r})"

    @staticmethod
    def new_dek() -> bytes:
        return utils.random(KEY_BYTES)

    def wrap_dek(self, dek: bytes, table: str, row_id: uuid.UUID) -> bytes:
        self.follow()
        version = self.keyring.current
        aad = f"dek|{table}|{row_id}".encode()
        return (
            _WRAP
            + struct.pack(">I", version)
            + _aead_encrypt(self.keyring.keks[version], dek, aad)
        )

    def unwrap_dek(self, blob: bytes, table: str, row_id: uuid.UUID) -> bytes:
        version = self.kek_version(blob)
        if version not in self.keyring.keks:  # rewrapped by a rotation since we read the file
            self.follow(now=True)
        kek = self.keyring.keks.get(version)
        if kek is None:
            raise MissingKeyError(
                _("key version {version} is not in the master key file").format(version=version)
            )
        try:
            return _aead_decrypt(kek, blob[6:], f"dek|{table}|{row_id}".encode())
        except NaclCryptoError:
            raise CryptoError(
                _(
                    "cannot unwrap the data key of {table} row {row}: wrong master key, "
                    "or the ciphertext was moved"
                ).format(table=table, row=row_id)
            ) from None

    @staticmethod
    def kek_version(blob: bytes) -> int:
        if len(blob) < 6 or blob[:2] != _WRAP:
            raise CryptoError("not a wrapped data key")
        return int(struct.unpack(">I", blob[2:6])[0])

    def rewrap(self, blob: bytes, table: str, row_id: uuid.UUID) -> bytes:
        return self.wrap_dek(self.unwrap_dek(blob, table, row_id), table, row_id)

    @staticmethod
    def _field_aad(table: str, column: str, row_id: uuid.UUID) -> bytes:
        return f"{table}|{column}|{row_id}|{_FIELD_VERSION}".encode()

    def encrypt(
        self, dek: bytes, table: str, column: str, row_id: uuid.UUID, plaintext: bytes
    ) -> bytes:
        return _FIELD + _aead_encrypt(dek, plaintext, self._field_aad(table, column, row_id))

    def decrypt(
        self, dek: bytes, table: str, column: str, row_id: uuid.UUID, blob: bytes
    ) -> bytes:
        if blob[:1] != _FIELD:
            raise CryptoError(f"{table}.{column} of row {row_id} is not a field ciphertext")
        try:
            return _aead_decrypt(dek, blob[1:], self._field_aad(table, column, row_id))
        except NaclCryptoError:
            raise CryptoError(
                _(
                    "cannot decrypt {table}.{column} of row {row}: the ciphertext was moved "
                    "or altered"
                ).format(table=table, column=column, row=row_id)
            ) from None

    def seal_many(
        self, table: str, column: str, rows: Sequence[tuple[uuid.UUID, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """(wrapped DEK, ciphertext) for each (row id, plaintext), exactly as ``new_dek``,
        ``wrap_dek`` and ``encrypt`` would make them: a fresh data key and fresh nonces per row,
        so shredding one row's key never exposes another's. Only faster for a batch: one
        read of the system's randomness for all rows, and libsodium called without PyNaCl's
        per-call checks (the outbox rows of an escalation spike)."""
        self.follow()
        version = self.keyring.current
        kek, head = self.keyring.keks[version], _WRAP + struct.pack(">I", version)
        step = KEY_BYTES + 2 * NONCE_BYTES
        noise = os.urandom(step * len(rows))
        longest = max((len(p) for _r, p in rows), default=0)
        out = _ffi.new("unsigned char[]", max(longest, KEY_BYTES) + _ABYTES)
        size = _ffi.new("unsigned long long *")
        encrypt = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt
        buffer, null = _ffi.buffer, _ffi.NULL
        sealed = []
        for n, (row_id, plaintext) in enumerate(rows):
            at = n * step
            dek = noise[at : at + KEY_BYTES]
            wrap_nonce = noise[at + KEY_BYTES : at + KEY_BYTES + NONCE_BYTES]
            nonce = noise[at + KEY_BYTES + NONCE_BYTES : at + step]
            ids = str(row_id)
            aad = f"dek|{table}|{ids}".encode()
            if encrypt(out, size, dek, KEY_BYTES, aad, len(aad), null, wrap_nonce, kek) != 0:
                raise CryptoError("encryption failed")  # pragma: no cover - libsodium never does
            wrapped = head + wrap_nonce + buffer(out, size[0])[:]
            aad = f"{table}|{column}|{ids}|{_FIELD_VERSION}".encode()
            if encrypt(out, size, plaintext, len(plaintext), aad, len(aad), null, nonce, dek):
                raise CryptoError("encryption failed")  # pragma: no cover
            sealed.append((wrapped, _FIELD + nonce + buffer(out, size[0])[:]))
        return sealed

    def blind_index(self, kind: str, value: str) -> bytes:
        """HMAC-SHA256 over the normalised value, domain-separated by ``kind``."""
        msg = kind.encode() + b"\x00" + normalise(value).encode()
        return hmac.new(self.keyring.index_key, msg, hashlib.sha256).digest()

    def address_index(self, channel: str, value: str) -> bytes:
        """A channel address's blind index (a phone number, a chat id): as ``blind_index``,
        with the address key (``amparo keys rotate-index`` replaces it)."""
        self.follow()  # a rotation is followed within FOLLOW_S, even by an idle process
        msg = channel.encode() + b"\x00" + normalise(value).encode()
        return hmac.new(self.keyring.address_index_key, msg, hashlib.sha256).digest()

    def address_indexes(self, channel: str, value: str) -> list[bytes]:
        """What to look an address up by: its index, and during a rotation its index under
        the other key too (``Keyring.address_lookup_keys``)."""
        self.follow()
        msg = channel.encode() + b"\x00" + normalise(value).encode()
        keys = self.keyring.address_lookup_keys
        return [hmac.new(key, msg, hashlib.sha256).digest() for key in keys]

    def exact_index(self, kind: str, value: str) -> bytes:
        """HMAC-SHA256 over the value exactly as given (a secret token: "Ab" is not "aB"),
        domain-separated from ``blind_index`` and by ``kind``."""
        msg = b"exact\x00" + kind.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self.keyring.index_key, msg, hashlib.sha256).digest()

    def audit_mac(self, previous: bytes, entry: bytes) -> bytes:
        return hmac.new(self.keyring.audit_key, previous + entry, hashlib.sha256).digest()
