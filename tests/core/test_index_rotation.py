"""The address index key's rotation (SECURITY.md R15: "rebuild the indexes"), on SQLite and
PostgreSQL: a seized key lets phone numbers be brute-forced from the indexes, so it can be
replaced, every address's index recomputed from the address itself."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import core.keys
from core.crypto import FOLLOW_S, Keyring, Vault, load_keyring, write_keyring
from core.db import transaction
from core.defenders import find_address, lookup_index, new_address
from core.keys import init_keys, rotate_index
from core.models import CallbackToken, ChannelAddress
from tests.core.test_keys import populate

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(autouse=True)
def _no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    """No running process to wait for, unless a test says otherwise."""
    monkeypatch.setattr(core.keys, "SETTLE_S", 0.0)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "master.key"
    init_keys(path)
    return path


async def addresses(sessions: Sessions) -> dict[uuid.UUID, bytes]:
    async with sessions() as s:
        found = await s.execute(select(ChannelAddress.id, ChannelAddress.blind_index))
        return {r[0]: r[1] for r in found}


async def button(sessions: Sessions, chat_index: bytes) -> bytes:
    token = uuid.uuid4().bytes * 2
    async with transaction(sessions) as s:
        s.add(
            CallbackToken(
                token_index=token,
                chat_index=chat_index,
                keyboard=uuid.uuid4(),
                choice="safe",
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    return token


async def test_it_recomputes_every_address_index_under_a_new_key(
    sessions: Sessions, key_file: Path
) -> None:
    old = Vault(load_keyring(key_file))
    plain = await populate(sessions, old, addresses=3)
    values = {k.rsplit(".", 1)[1]: v for k, v in plain.items() if "channel_addresses" in k}
    before = await addresses(sessions)
    pressed = await button(sessions, old.address_index("telegram", next(iter(values.values()))))
    other = await button(sessions, b"\x01" * 32)  # a chat no address is kept for

    assert await rotate_index(sessions, key_file) == 3

    ring = load_keyring(key_file)
    assert ring.address_key is not None and ring.address_key_old is None  # finished
    assert ring.address_key != old.keyring.address_index_key
    assert (ring.index_key, ring.keks, ring.pepper) == (
        old.keyring.index_key,
        old.keyring.keks,
        old.keyring.pepper,
    )  # nothing else changes: tokens, invites and data keys stay valid
    new, after = Vault(ring), await addresses(sessions)
    assert set(after) == set(before)
    for row_id, value in values.items():
        index = after[uuid.UUID(row_id)]
        assert index == new.address_index("telegram", value) != before[uuid.UUID(row_id)]
        assert index != old.address_index("telegram", value)  # the old key finds nothing
    async with sessions() as s:
        found = await s.execute(select(CallbackToken.token_index, CallbackToken.chat_index))
        chats = {r[0]: r[1] for r in found}
    first = next(iter(values.values()))
    assert chats[pressed] == new.address_index("telegram", first)  # the button still works
    assert chats[other] == b"\x01" * 32


async def test_after_a_crash_it_finishes_the_rotation_the_file_records(
    sessions: Sessions, key_file: Path
) -> None:
    """The new key was written, then the process died before the rows changed (or before
    the old key left the file): running it again uses that key, not yet another one."""
    old = Vault(load_keyring(key_file))
    await populate(sessions, old, addresses=2)
    halfway = load_keyring(key_file).with_new_address_key()
    write_keyring(key_file, halfway)
    assert await rotate_index(sessions, key_file) == 2
    ring = load_keyring(key_file)
    assert ring.address_key == halfway.address_key and ring.address_key_old is None
    new = Vault(ring)
    async with sessions() as s:
        for address in (await s.execute(select(ChannelAddress))).scalars():
            value = address.get_text(new, "value_enc")
            assert value is not None
            assert address.blind_index == new.address_index(address.channel, value)
    assert await rotate_index(sessions, key_file) == 2  # a second rotation: a new key again
    assert load_keyring(key_file).address_key != ring.address_key


def test_a_key_file_from_before_keeps_its_indexes() -> None:
    """A key file with no address key: addresses are indexed with the index key, as before
    there was one; the file round-trips with and without it."""
    ring = Keyring.generate()
    vault = Vault(ring)
    assert vault.address_index("signal", "+57 300") == vault.blind_index("signal", "+57 300")
    assert "address_key" not in json.loads(ring.to_json())
    assert Keyring.from_json(ring.to_json()) == ring
    rotating = ring.with_new_address_key()
    assert Keyring.from_json(rotating.to_json()) == rotating
    # Until the rotation is done, addresses are still looked up with the old key.
    assert Vault(rotating).address_index("signal", "+57 300") == vault.address_index(
        "signal", "+57 300"
    )
    rotated = rotating.address_rotation_done()
    assert Vault(rotated).address_index("signal", "+57 300") != vault.address_index(
        "signal", "+57 300"
    )
    assert Vault(rotated).blind_index("signal", "+57 300") == vault.blind_index(
        "signal", "+57 300"
    )


async def test_a_running_process_finds_every_address_throughout_a_rotation(
    sessions: Sessions, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R15 on a live system: a key that may have been seen is replaced now, not at the next
    maintenance window. A process that follows the key file (as ``amparo serve`` does) finds
    every address under the keys it looks up with, all through the rotation (so it never
    takes a defender for a stranger); the addresses it writes meanwhile, with whichever key
    it then has, end under the new key."""
    monkeypatch.setattr(core.keys, "SETTLE_S", 2 * FOLLOW_S)  # as in production
    running = Vault(load_keyring(key_file), key_file=key_file)
    plain = await populate(sessions, running, addresses=3)
    known = [("telegram", v) for k, v in plain.items() if k.startswith("channel_addresses.")]
    rotation = asyncio.create_task(rotate_index(sessions, key_file))
    looked, missed, added = 0, [], 0
    while not rotation.done():
        for channel, value in known:
            async with sessions() as s:  # one statement: the rows as they are at that moment
                either = running.address_indexes(channel, value)
                found = await s.scalar(
                    select(ChannelAddress.id).where(
                        ChannelAddress.channel == channel, ChannelAddress.blind_index.in_(either)
                    )
                )
                if found is None:
                    missed.append((looked, channel, running.keyring.address_moved))
            looked += 1
        if looked % 12 == 0:  # a newcomer, written with the key this process has now
            value = f"+573001{added:04d}"
            async with transaction(sessions) as s:
                s.add(new_address(running, "signal", value))
            known.append(("signal", value))
            added += 1
        await asyncio.sleep(0.01)
    assert 3 <= await rotation <= 3 + added  # the last pass reads what was there by then
    assert missed == [] and looked > 100 and added > 5
    done = Vault(load_keyring(key_file))
    assert done.keyring.address_key_old is None
    async with sessions() as s:
        for channel, value in known:  # under the new key alone, as after any rotation
            assert await find_address(s, channel, done.address_index(channel, value))
            assert await lookup_index(sessions, done, channel, value) == done.address_index(
                channel, value
            )


def test_during_a_rotation_addresses_are_looked_up_under_both_keys() -> None:
    """Written with the old key until the rows have moved, then with the new one; looked up
    under both meanwhile, the one written with first; the file says which."""
    ring = Keyring.generate().with_new_address_key()
    assert ring.address_key is not None and ring.address_key_old is not None
    assert ring.address_index_key == ring.address_key_old
    assert ring.address_lookup_keys == (ring.address_key_old, ring.address_key)
    moved = ring.address_rows_moved()
    assert moved.address_index_key == moved.address_key
    assert moved.address_lookup_keys == (moved.address_key, moved.address_key_old)
    assert Keyring.from_json(moved.to_json()) == moved and '"address_moved"' in moved.to_json()
    done = moved.address_rotation_done()
    assert done.address_lookup_keys == (done.address_key,) and not done.address_moved
    fresh = Keyring.generate()  # a file from before address keys: the index key alone
    assert fresh.address_lookup_keys == (fresh.index_key,)
