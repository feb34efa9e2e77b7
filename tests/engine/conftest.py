"""A small world for the engine's tests: an organisation, a defender, contacts, a desk."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import webhooks
from core.crypto import Vault, generate_org_keypair
from core.db import transaction
from core.models import (
    Alert,
    AlertEvent,
    ChannelAddress,
    Consent,
    Defender,
    DefenderStatus,
    Organisation,
    OutboxMessage,
    Responder,
    Role,
    TrustedContact,
)
from core.sweep import Sweep
from tests.pg import Cluster

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday


@dataclass
class World:
    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    org_id: uuid.UUID
    private_key: bytes
    defender_id: uuid.UUID
    contact_ids: list[uuid.UUID] = field(default_factory=list)
    responder_ids: list[uuid.UUID] = field(default_factory=list)
    webhook_secret: str = ""

    async def defender(self, session: AsyncSession) -> Defender:
        found = await session.get(Defender, self.defender_id, populate_existing=True)
        assert found is not None
        return found


def address(vault: Vault, channel: str, value: str, **owner: Any) -> ChannelAddress:
    row = ChannelAddress(
        id=uuid.uuid4(), channel=channel, blind_index=vault.address_index(channel, value), **owner
    )
    row.put(vault, "value_enc", value)
    return row


async def build_world(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    *,
    channel: str = "telegram",
    handle: str = "quiet-heron-41",
    locale: str = "es",
    webhook_url: str | None = "http://desk.invalid/hook",
) -> World:
    public, private = generate_org_keypair()
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name=f"Desk {uuid.uuid4().hex[:6]}", public_key=public)
        s.add(org)
        await s.flush()
        defender = Defender(
            id=uuid.uuid4(),
            org_id=org.id,
            handle=handle,
            locale=locale,
            status=DefenderStatus.active,
        )
        s.add(defender)
        await s.flush()
        s.add(address(vault, channel, f"d-{handle}", defender_id=defender.id))
        world = World(sessions, vault, org.id, private, defender.id)
        for n, consent in enumerate((Consent.confirmed, Consent.confirmed, Consent.declined)):
            where = address(vault, channel, f"c{n}-{handle}")
            s.add(where)
            await s.flush()
            contact = TrustedContact(
                id=uuid.uuid4(),
                defender_id=defender.id,
                consent=consent,
                address_id=where.id,
                locale="fr" if n == 1 else None,
            )
            s.add(contact)
            if consent is Consent.confirmed:
                world.contact_ids.append(contact.id)
        for n, on_duty in enumerate((True, False)):
            responder = Responder(
                id=uuid.uuid4(),
                org_id=org.id,
                username=f"r{n}-{uuid.uuid4().hex[:8]}",
                role=Role.responder,
                password_hash="x",
                on_duty=on_duty,
            )
            s.add(responder)
            await s.flush()
            s.add(address(vault, channel, f"r{n}-{handle}", responder_id=responder.id))
            world.responder_ids.append(responder.id)
        if webhook_url:
            _hook, world.webhook_secret = await webhooks.add(
                s, vault, org_id=org.id, url=webhook_url
            )
    return world


@pytest.fixture
async def pg_url(pg_cluster: Cluster) -> AsyncIterator[str]:
    """A fresh PostgreSQL database, for tests that are about PostgreSQL alone."""
    name = f"t_{uuid.uuid4().hex}"
    admin = f"postgresql://amparo@127.0.0.1:{pg_cluster.port}/postgres"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    yield f"{pg_cluster.url}/{name}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def world(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> World:
    return await build_world(sessions, vault)


@pytest.fixture
def sweep(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> Sweep:
    return Sweep(sessions, vault, owner="test-sweep")


@dataclass(frozen=True)
class Sent:
    recipient: str | None
    priority: int
    text: str
    key: str
    state: str
    person: str  # "defender", "contact:0", "responder:0", "webhook"
    body: dict[str, Any] | None


def who(world: World, row: OutboxMessage) -> str:
    people = {"contact": world.contact_ids, "responder": world.responder_ids}.get(
        str(row.recipient), []
    )
    for n, person in enumerate(people):
        if person.hex in row.idempotency_key:
            return f"{row.recipient}:{n}"
    return str(row.recipient)


async def outbox(world: World) -> list[Sent]:
    """Every outbox row, decrypted, in the order written."""
    async with world.sessions() as s:
        rows = (
            await s.execute(select(OutboxMessage).order_by(OutboxMessage.created_at))
        ).scalars()
        found = []
        for row in rows:
            raw = row.get(world.vault, "payload_enc")
            data = json.loads(raw) if raw is not None else {}
            person = who(world, row)
            found.append(
                Sent(
                    row.recipient,
                    row.priority,
                    data.get("text", ""),
                    row.idempotency_key,
                    str(row.state),
                    person,
                    data if row.channel == "webhook" else None,
                )
            )
    return found


async def alert_of(world: World) -> Alert | None:
    async with world.sessions() as s:
        stmt = (
            select(Alert)
            .where(Alert.defender_id == world.defender_id)
            .order_by(Alert.created_at.desc())
        )
        return (await s.execute(stmt)).scalars().first()


async def timeline(world: World, alert_id: uuid.UUID) -> list[AlertEvent]:
    async with world.sessions() as s:
        stmt = select(AlertEvent).where(AlertEvent.alert_id == alert_id).order_by(AlertEvent.id)
        return list((await s.execute(stmt)).scalars())
