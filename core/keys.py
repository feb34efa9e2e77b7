"""Master key file: creation, KEK rotation and address index rotation (SECURITY.md R15).

Rotation rewraps every row's data key (DEK) under a new key-encryption key (KEK); the field
ciphertexts are never touched. Blind indexes do not change on KEK rotation: they are keyed by the
separate index keys, which that rotation keeps as they are. ``rotate_index`` replaces the key of
the channel addresses' blind indexes (phone numbers and chat ids: the ones worth brute-forcing
with a seized key) and recomputes each from the address, decrypted.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import FOLLOW_S, CryptoError, Keyring, Vault, load_keyring, write_keyring
from core.db import transaction
from core.i18n import operator_gettext as _
from core.models import Base, CallbackToken, ChannelAddress, Encrypted

_MAX_PASSES = 3
SETTLE_S = 2 * FOLLOW_S  # after writing the new key, before the first pass


@dataclass(frozen=True)
class RotationReport:
    old_version: int
    new_version: int
    rows_rewrapped: int
    tables: dict[str, int] = field(default_factory=dict)  # table name -> rows rewrapped


def init_keys(key_file: Path) -> Keyring:
    """Create a new master key file (mode 0600, directory 0700); never replace one."""
    ring = Keyring.generate()
    try:
        write_keyring(key_file, ring, exclusive=True)
    except (CryptoError, FileExistsError):
        raise CryptoError(
            _(
                "master key file {path} already exists; refusing to replace it, which would "
                "make every encrypted record unreadable"
            ).format(path=key_file)
        ) from None
    return ring


def encrypted_models() -> list[tuple[str, type[Encrypted]]]:
    """(table, class) for every mapped class holding a wrapped data key, in table order."""
    found: dict[str, type[Encrypted]] = {}
    for mapper in Base.registry.mappers:
        cls = mapper.class_
        if mapper.inherits is None and issubclass(cls, Encrypted):
            found[str(cls.__tablename__)] = cls  # type: ignore[attr-defined]
    return sorted(found.items())


@contextmanager
def _rotation_lock(key_file: Path) -> Iterator[None]:
    """One rotation at a time: two would each drop the other's new KEK."""
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(key_file.with_name(f".{key_file.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CryptoError(
                _("a key rotation of {path} is already running").format(path=key_file)
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


async def _rewrap_table(
    sessions: async_sessionmaker[AsyncSession],
    table: str,
    model: type[Encrypted],
    vault: Vault,
    batch: int,
) -> int:
    """One pass over ``model`` by id, a transaction per batch; returns the rows rewrapped."""
    current = vault.keyring.current
    done = 0
    last: uuid.UUID | None = None
    while True:
        async with transaction(sessions) as s:
            query = select(model.id, model.dek).where(model.dek.is_not(None))
            if last is not None:
                query = query.where(model.id > last)
            rows = (await s.execute(query.order_by(model.id).limit(batch))).all()
            for row_id, dek in rows:
                if dek is None or vault.kek_version(dek) == current:
                    continue
                result = await s.execute(
                    update(model)
                    .where(model.id == row_id, model.dek == dek)  # skip rows changed meanwhile
                    .values(dek=vault.rewrap(dek, table, row_id))
                    .returning(model.id)
                    .execution_options(synchronize_session=False)
                )
                done += len(result.all())
        if len(rows) < batch:
            return done
        last = rows[-1][0]


async def rotate(
    sessions: async_sessionmaker[AsyncSession],
    key_file: Path,
    *,
    batch: int = 500,
) -> RotationReport:
    """Rotate the KEK: rewrap every data key, then drop the old KEKs from the key file.

    The key file gains the new KEK (as current, old ones kept) before any row changes, so a
    crash at any point leaves every row readable with the file on disk; running ``rotate``
    again then finishes the job. The old KEKs leave the file only once no row needs them.
    Field ciphertexts and blind indexes stay byte-for-byte the same: the index key is separate
    and is not rotated here. Running servers need no restart: they follow the key file
    (``Vault(key_file=…)``) within FOLLOW_S, and the rewrapping starts only after SETTLE_S,
    so no process is still wrapping with the old key when the last pass proves none is left.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    load_keyring(key_file)  # a missing or unsafe file fails here, before anything is created
    with _rotation_lock(key_file):
        old = load_keyring(key_file)
        new = old.with_new_kek()
        write_keyring(key_file, new)
        await asyncio.sleep(SETTLE_S)  # every running process now wraps with the new key
        vault = Vault(new)
        tables: dict[str, int] = {}
        for _pass in range(_MAX_PASSES):  # a pass finding nothing stale proves every row is done
            rewrapped = 0
            for name, model in encrypted_models():
                n = await _rewrap_table(sessions, name, model, vault, batch)
                tables[name] = tables.get(name, 0) + n
                rewrapped += n
            if rewrapped == 0:
                break
        else:
            raise CryptoError(
                _(
                    "rows wrapped by an old key keep appearing: stop every process using the old "
                    "key file, then run the rotation again (the old keys stay in {path})"
                ).format(path=key_file)
            )
        if load_keyring(key_file) != new:
            raise CryptoError(
                _("master key file {path} changed during the rotation; old keys kept").format(
                    path=key_file
                )
            )
        write_keyring(key_file, new.only_current())
    return RotationReport(old.current, new.current, sum(tables.values()), tables)


async def rotate_index(sessions: async_sessionmaker[AsyncSession], key_file: Path) -> int:
    """Replace the address index key; returns the addresses whose index was recomputed.

    Running processes go on: each reads the key file within FOLLOW_S of a change and, while
    a rotation is under way, looks addresses up under both keys (``defenders.index_of``).
    So: the new key goes into the file beside the old one, still the one written with; after
    SETTLE_S every address's index, and the buttons' record of the chat they were sent to,
    change in one transaction, and the file says the rows have moved (written with the new
    key from then on); after SETTLE_S again, a last pass moves what a process wrote with the
    old key meanwhile, and the old key leaves the file. After a crash, running it again
    finishes the rotation the file records: every index is recomputed from its address."""
    load_keyring(key_file)  # a missing or unsafe file fails here, before anything is created
    with _rotation_lock(key_file):
        ring = load_keyring(key_file)
        if ring.address_key_old is None:
            ring = ring.with_new_address_key()
            write_keyring(key_file, ring)
        if not ring.address_moved:
            await asyncio.sleep(SETTLE_S)  # every process looks addresses up with both keys
            await _move_addresses(sessions, ring)
            ring = ring.address_rows_moved()
            write_keyring(key_file, ring)
        await asyncio.sleep(SETTLE_S)  # every process writes addresses with the new key
        done = await _move_addresses(sessions, ring)
        write_keyring(key_file, ring.address_rotation_done())
    return done


async def _move_addresses(sessions: async_sessionmaker[AsyncSession], ring: Keyring) -> int:
    """Every address's index recomputed under the new key, and the buttons sent to its chat
    under either key recorded under it, in one transaction; the addresses it read."""
    vault = Vault(ring.address_rotation_done())  # indexes with the new key
    assert ring.address_key_old is not None
    before = Vault(replace(ring, address_key=ring.address_key_old, address_key_old=None))
    async with transaction(sessions) as s:
        found = (await s.execute(select(ChannelAddress))).scalars().all()
        moved: dict[bytes, bytes] = {}  # an index under the old key -> under the new one
        done = 0
        for address in found:
            value = address.get_text(vault, "value_enc")
            if value is None:
                continue
            new = vault.address_index(address.channel, value)
            moved[before.address_index(address.channel, value)] = new
            address.blind_index = new
            done += 1
        # The buttons' table is short-lived (a day): read whole, not once an address.
        tokens = await s.execute(select(CallbackToken.token_index, CallbackToken.chat_index))
        changes = [
            {"token_index": token, "chat_index": moved[chat]}
            for token, chat in tokens
            if chat in moved
        ]
        if changes:  # by primary key, all in one executemany
            await s.execute(update(CallbackToken), changes)
    return done
