"""Encryption at rest: master keyring, per-record data keys, blind indexes and sealed boxes.

Two kinds of secret (DESIGN.md, "Data protection"):

1. What the server must use is encrypted with a per-record data key (DEK) under
   XChaCha20-Poly1305; the associated data binds ``table|column|row|version`` so a ciphertext
   copied to another row or column fails to open. DEKs are wrapped by a key-encryption key (KEK)
   from the master key file, never the database. Rotation rewraps DEKs and leaves data untouched.
2. What only the desk reads is sealed (libsodium sealed box) to the organisation's public key.
   Sealed boxes carry no associated data, so the organisation and record ids travel inside the
   plaintext and are checked after opening.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import struct
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl import bindings, pwhash, secret, utils
from nacl._sodium import ffi as _ffi  # the libsodium PyNaCl itself calls, for seal_many
from nacl._sodium import lib as _lib
from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from core.i18n import operator_gettext as _

KEY_BYTES = 32
NONCE_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_ABYTES = bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
_WRAP = b"K1"  # wrapped DEK: magic, u32 KEK version, nonce, ciphertext
_FIELD = b"\x01"  # field ciphertext: format byte, nonce, ciphertext
_FIELD_VERSION = 1
_PROTECTED = b"P1"  # passphrase-protected private key: magic, u32 ops, u64 mem, salt, box


class CryptoError(Exception):
    """A ciphertext cannot be opened or a key cannot be used; never carries plaintext."""


class MissingKeyError(CryptoError):
    """The master key file, or a key version it should hold, is absent."""


@dataclass(frozen=True)
class Keyring:
    keks: dict[int, bytes]
    current: int
    index_key: bytes
    audit_key: bytes
    pepper: bytes = field(repr=False)

    def __repr__(self) -> str:  # keys never reach a log line or traceback
        return f"Keyring(current={self.current}, versions={sorted(self.keks)})"

    @classmethod
    def generate(cls) -> Keyring:
        return cls(
            keks={1: utils.random(KEY_BYTES)},
            current=1,
            index_key=utils.random(KEY_BYTES),
            audit_key=utils.random(KEY_BYTES),
            pepper=utils.random(KEY_BYTES),
        )

    def with_new_kek(self) -> Keyring:
        version = max(self.keks) + 1
        return Keyring(
            {**self.keks, version: utils.random(KEY_BYTES)},
            version,
            self.index_key,
            self.audit_key,
            self.pepper,
        )

    def only_current(self) -> Keyring:
        return Keyring(
            {self.current: self.keks[self.current]},
            self.current,
            self.index_key,
            self.audit_key,
            self.pepper,
        )

    def to_json(self) -> str:
        def b64(b: bytes) -> str:
            return base64.b64encode(b).decode()

        return json.dumps(
            {
                "format": 1,
                "current": self.current,
                "keks": {str(v): b64(k) for v, k in sorted(self.keks.items())},
                "index_key": b64(self.index_key),
                "audit_key": b64(self.audit_key),
                "pepper": b64(self.pepper),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        try:
            data = json.loads(text)
            keks = {int(v): base64.b64decode(k, validate=True) for v, k in data["keks"].items()}
            ring = cls(
                keks=keks,
                current=int(data["current"]),
                index_key=base64.b64decode(data["index_key"], validate=True),
                audit_key=base64.b64decode(data["audit_key"], validate=True),
                pepper=base64.b64decode(data["pepper"], validate=True),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CryptoError(_("the master key file is malformed")) from exc
        keys = [*ring.keks.values(), ring.index_key, ring.audit_key, ring.pepper]
        if ring.current not in ring.keks or any(len(k) != KEY_BYTES for k in keys):
            raise CryptoError(_("the master key file is malformed"))
        return ring


def load_keyring(path: Path) -> Keyring:
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        raise MissingKeyError(_("master key file {path} not found").format(path=path)) from None
    except OSError as exc:
        raise MissingKeyError(
            _("master key file {path} cannot be read ({reason})").format(
                path=path, reason=exc.strerror
            )
        ) from None
    except UnicodeDecodeError:  # its message would quote a byte of the file
        raise CryptoError(_("the master key file is malformed")) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CryptoError(
            _("master key file {path} is open to other users; run chmod 600 on it").format(
                path=path
            )
        )
    return Keyring.from_json(text)


def write_keyring(path: Path, ring: Keyring, *, exclusive: bool = False) -> None:
    """Write atomically with mode 0600; ``exclusive`` refuses to replace an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if exclusive and path.exists():
        raise CryptoError(_("master key file {path} already exists").format(path=path))
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(ring.to_json())
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if another process created it meanwhile
        else:
            os.replace(tmp, path)
        # The rename must reach the disk before rows are rewrapped under a new KEK (rotation).
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_keyring(path: Path, *, create: bool) -> Keyring:
    """Load the keyring; create it (mode 0600) when absent and ``create`` is allowed."""
    if create and not path.exists():
        try:
            write_keyring(path, Keyring.generate(), exclusive=True)
        except FileExistsError:
            pass
    return load_keyring(path)


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


class Vault:
    """Every operation on data the server must use, bound to one keyring."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def __repr__(self) -> str:
        return f"Vault({self.keyring!r})"

    @staticmethod
    def new_dek() -> bytes:
        return utils.random(KEY_BYTES)

    def wrap_dek(self, dek: bytes, table: str, row_id: uuid.UUID) -> bytes:
        version = self.keyring.current
        aad = f"dek|{table}|{row_id}".encode()
        return (
            _WRAP
            + struct.pack(">I", version)
            + _aead_encrypt(self.keyring.keks[version], dek, aad)
        )

    def unwrap_dek(self, blob: bytes, table: str, row_id: uuid.UUID) -> bytes:
        version = self.kek_version(blob)
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

    def audit_mac(self, previous: bytes, entry: bytes) -> bytes:
        return hmac.new(self.keyring.audit_key, previous + entry, hashlib.sha256).digest()


# --- sealed boxes: what only the desk reads -------------------------------------------------


class SealedMismatchError(CryptoError):
    """A sealed item opened, but it belongs to another organisation, record or kind."""


def generate_org_keypair() -> tuple[bytes, bytes]:
    """(public, private) raw Curve25519 keys; meant to run on a responder's machine."""
    private = PrivateKey.generate()
    return bytes(private.public_key), bytes(private)


def protect_private_key(
    private_key: bytes,
    passphrase: str,
    *,
    opslimit: int = pwhash.argon2id.OPSLIMIT_MODERATE,
    memlimit: int = pwhash.argon2id.MEMLIMIT_MODERATE,
) -> bytes:
    """Encrypt an organisation private key under a passphrase (Argon2id + XSalsa20-Poly1305)."""
    salt = utils.random(pwhash.argon2id.SALTBYTES)
    key = pwhash.argon2id.kdf(KEY_BYTES, passphrase.encode(), salt, opslimit, memlimit)
    box = secret.SecretBox(key).encrypt(private_key)
    return _PROTECTED + struct.pack(">IQ", opslimit, memlimit) + salt + bytes(box)


def unprotect_private_key(blob: bytes, passphrase: str) -> bytes:
    if blob[:2] != _PROTECTED:
        raise CryptoError("not a protected private key")
    salt_end = 14 + pwhash.argon2id.SALTBYTES
    try:
        opslimit, memlimit = struct.unpack(">IQ", blob[2:14])
        salt = blob[14:salt_end]
        key = pwhash.argon2id.kdf(KEY_BYTES, passphrase.encode(), salt, opslimit, memlimit)
    except (struct.error, ValueError):
        raise CryptoError("the protected organisation key is malformed") from None
    try:
        return bytes(secret.SecretBox(key).decrypt(blob[salt_end:]))
    except NaclCryptoError:
        raise CryptoError(_("wrong passphrase for the organisation key")) from None


def seal(
    public_key: bytes, *, org_id: uuid.UUID, record_id: uuid.UUID, kind: str, body: Any
) -> bytes:
    plaintext = json.dumps(
        {"org": str(org_id), "record": str(record_id), "kind": kind, "body": body},
        ensure_ascii=False,
    ).encode()
    return bytes(SealedBox(PublicKey(public_key)).encrypt(plaintext))


def open_sealed(
    private_key: bytes, blob: bytes, *, org_id: uuid.UUID, record_id: uuid.UUID, kind: str
) -> Any:
    try:
        plaintext = SealedBox(PrivateKey(private_key)).decrypt(blob)
    except NaclCryptoError:
        raise CryptoError("this sealed item was not sealed to this organisation key") from None
    try:  # anyone holding the public key can seal anything: the layout is not guaranteed
        data = json.loads(plaintext)
    except ValueError:
        data = None
    if not isinstance(data, dict) or "body" not in data:
        raise SealedMismatchError("sealed item is malformed; it was not sealed by Amparo")
    if (data.get("org"), data.get("record"), data.get("kind")) != (
        str(org_id),
        str(record_id),
        kind,
    ):
        raise SealedMismatchError(
            "sealed item belongs to another record; it may have been swapped"
        )
    return data["body"]
