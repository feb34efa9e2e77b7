"""A defender writing while ``amparo keys rotate-index`` runs (SECURITY.md R15) is still the
defender: the rows move to the new key in one transaction, the running process learns of it
within a second, and meanwhile it finds them under either key. Taken for a stranger, their
message would be answered with the invite prompt and given a second address row (which the
rotation's last pass would then collide with)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select, update

import flows.engine
from core.crypto import Vault
from core.db import transaction
from core.models import ChannelAddress, OutboxMessage
from core.outbox import payload
from tests.flows.conftest import Desk, onboard

STRANGER = "This is a private service"


async def replies(desk: Desk, address_id: uuid.UUID, seen: set[uuid.UUID]) -> list[str]:
    async with desk.sessions() as s:
        rows = (
            await s.execute(select(OutboxMessage).where(OutboxMessage.address_id == address_id))
        ).scalars()
        fresh = [r for r in rows if r.id not in seen and r.payload_enc is not None]
    seen.update(r.id for r in fresh)
    return [payload(desk.vault, r).text for r in fresh]


async def test_a_defender_is_never_a_stranger_while_the_address_key_rotates(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = await onboard(desk)
    async with desk.sessions() as s:
        address_id = await s.scalar(select(ChannelAddress.id))
        addresses = await s.scalar(select(func.count()).select_from(ChannelAddress))
    assert address_id is not None
    seen: set[uuid.UUID] = set()
    await replies(desk, address_id, seen)
    rotating = desk.vault.keyring.with_new_address_key()  # the file, once the rotation starts
    old = desk.vault.address_index(chat.channel, chat.address)
    new = Vault(rotating.address_rotation_done()).address_index(chat.channel, chat.address)

    async def rows_move() -> None:  # the rotation's first pass
        async with transaction(desk.sessions) as s:
            await s.execute(
                update(ChannelAddress)
                .where(ChannelAddress.id == address_id)
                .values(blind_index=new)
            )

    async def answered_as_the_defender(step: str) -> None:
        await chat.say("menu")
        said = await replies(desk, address_id, seen)
        assert said and not any(STRANGER in t for t in said), (step, said)

    desk.vault.keyring = rotating  # both keys looked up; the rows still have the old one
    await answered_as_the_defender("read the new key")
    await rows_move()
    await answered_as_the_defender("rows moved, this process not told yet")

    # The rows move between the moment the message's index is worked out and its flow.
    async def stale(*_: object) -> bytes:
        return old

    monkeypatch.setattr(flows.engine, "lookup_index", stale)
    await answered_as_the_defender("rows moved under a message in flight")
    monkeypatch.undo()

    desk.vault.keyring = rotating.address_rows_moved()
    await answered_as_the_defender("the file says the rows moved")
    desk.vault.keyring = rotating.address_rotation_done()
    await answered_as_the_defender("rotation done")
    async with desk.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(ChannelAddress)) == addresses
