"""A contact who asked to stop hears nothing more, not even an all-clear, when the defender
deleted their data before the desk closed the alert (both backends)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import update

from core import alert_handling, alerts, contacts, defenders
from core.db import transaction
from core.models import AlertKind, ChannelAddress, OutboxMessage, OutboxState, TrustedContact
from tests.engine.conftest import T0, World, outbox

MIN = timedelta(minutes=1)


async def test_a_contact_who_stopped_gets_no_all_clear_after_the_defenders_deletion(
    world: World,
) -> None:
    async with transaction(world.sessions) as s:
        d = await world.defender(s)
        alert = await alerts.raise_alert(s, world.vault, defender=d, kind=AlertKind.panic, now=T0)
        await s.execute(update(OutboxMessage).values(state=OutboxState.delivered))  # all sent
    async with transaction(world.sessions) as s:  # contact 0 sends /stop
        contact = await s.get(TrustedContact, world.contact_ids[0])
        assert contact is not None and contact.address_id is not None
        address = await s.get(ChannelAddress, contact.address_id)
        assert address is not None
        assert (await contacts.stop(s, address=address, now=T0 + MIN)).revoked == 1
    async with transaction(world.sessions) as s:  # then the defender deletes their data
        await defenders.delete_data(s, defender=await world.defender(s))
    async with transaction(world.sessions) as s:
        found = await s.get(type(alert), alert.id)
        responder = f"responder:{uuid.uuid4()}"
        now = T0 + 30 * MIN
        assert await alert_handling.resolve(
            s, world.vault, alert=found, outcome="safe", actor=responder, now=now
        )
    told = [m.person for m in await outbox(world) if ":closed" in m.key]
    assert "contact:1" in told  # alerted, never asked to stop: owed the all-clear
    assert "contact:0" not in told, told
