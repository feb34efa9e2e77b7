"""The master keyring: key-encryption keys (KEKs), the blind-index, audit and PIN keys, and the
file that holds them (never the database), plus the errors every crypto module raises.

The file is JSON, mode 0600, written atomically; ``core.keys`` creates and rotates it.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from nacl import utils

from core.i18n import operator_gettext as _

KEY_BYTES = 32


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
    # The blind indexes of channel addresses (phone numbers, chat ids) have a key of their
    # own, which ``amparo keys rotate-index`` replaces; None: the index key (a key file
    # made before there was one). ``address_key_old``: set while a rotation is unfinished;
    # ``address_moved``: its rows have the new key's indexes (written with it from then on).
    address_key: bytes | None = field(default=None, repr=False)
    address_key_old: bytes | None = field(default=None, repr=False)
    address_moved: bool = False

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
        return replace(self, keks={**self.keks, version: utils.random(KEY_BYTES)}, current=version)

    def only_current(self) -> Keyring:
        return replace(self, keks={self.current: self.keks[self.current]})

    @property
    def address_index_key(self) -> bytes:
        """The key addresses are indexed with: during a rotation, the old one until the rows
        have moved to the new one (in one transaction, then the file says so)."""
        if self.address_key_old is not None and not self.address_moved:
            return self.address_key_old
        return self.index_key if self.address_key is None else self.address_key

    @property
    def address_lookup_keys(self) -> tuple[bytes, ...]:
        """The keys an address is looked up with: during a rotation both, the one written
        with first (a process reads the file within a second of a change: whichever state
        the rows are in meanwhile, they are found)."""
        old, new = self.address_key_old, self.address_key
        if old is None or new is None:
            return (self.address_index_key,)
        return (new, old) if self.address_moved else (old, new)

    def with_new_address_key(self) -> Keyring:
        """A new address index key; the one it replaces kept until the rotation is done."""
        old = self.address_index_key
        return replace(self, address_key=utils.random(KEY_BYTES), address_key_old=old)

    def address_rows_moved(self) -> Keyring:
        return replace(self, address_moved=True)

    def address_rotation_done(self) -> Keyring:
        return replace(self, address_key_old=None, address_moved=False)

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
                **({} if self.address_key is None else {"address_key": b64(self.address_key)}),
                **(
                    {}
                    if self.address_key_old is None
                    else {"address_key_old": b64(self.address_key_old)}
                ),
                **({"address_moved": True} if self.address_moved else {}),
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
                address_key=_optional(data, "address_key"),
                address_key_old=_optional(data, "address_key_old"),
                address_moved=data.get("address_moved", False) is True,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CryptoError(_("the master key file is malformed")) from exc
        keys = [*ring.keks.values(), ring.index_key, ring.audit_key, ring.pepper]
        keys += [k for k in (ring.address_key, ring.address_key_old) if k is not None]
        if ring.current not in ring.keks or any(len(k) != KEY_BYTES for k in keys):
            raise CryptoError(_("the master key file is malformed"))
        return ring


def _optional(data: dict[str, str], name: str) -> bytes | None:
    value = data.get(name)
    return None if value is None else base64.b64decode(value, validate=True)


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
