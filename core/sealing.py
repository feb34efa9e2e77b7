"""Sealed boxes: what only the desk reads (DESIGN.md, "Data protection", second kind).

Items are sealed (libsodium sealed box) to the organisation's public key. Sealed boxes carry no
associated data, so the organisation and record ids travel inside the plaintext and are checked
after opening. The organisation private key is made on a responder's machine and kept on the
server only under a passphrase (Argon2id + XSalsa20-Poly1305).
"""

from __future__ import annotations

import json
import struct
import uuid
from typing import Any

from nacl import pwhash, secret, utils
from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from core.i18n import operator_gettext as _
from core.keyring import KEY_BYTES, CryptoError

_PROTECTED = b"P1"  # passphrase-protected private key: magic, u32 ops, u64 mem, salt, box


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
    # ASCII JSON: a lone surrogate (a file name from a chat app) is escaped, not an encoding
    # error that would lose the item; every opener's JSON parser reads it back.
    plaintext = json.dumps(
        {"org": str(org_id), "record": str(record_id), "kind": kind, "body": body}
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
