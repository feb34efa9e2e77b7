"""A desk, a clock and chats with the engine: each test plays one or more people in the bot.

``Chat.say`` sends one event and returns what reached that person's device since the last
call (every outbox row addressed to them, decrypted), so dialog tables read like a transcript.
Argon2id runs with tiny parameters here: the real cost is measured by bench/flows.py.

Every test runs on SQLite and on the throwaway PostgreSQL (``pg_cluster``), like the shared
fixtures; to keep the suite fast the schema is created once per backend and emptied before
each test, instead of a new database per test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core import security
from core.crypto import Vault, generate_org_keypair
from core.db import create_engine, sessionmaker, transaction
from core.defenders import create_invite
from core.messages import WITHDRAWN, Inbound, InboundAttachment, Location, Outbound
from core.models import Base, ChannelAddress, Defender, Organisation, OutboxMessage
from core.outbox import payload
from flows.engine import Engine
from tests.pg import Cluster, admin, empty_tables


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def shared_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    cluster: Cluster | None = None
    name = f"flows_{uuid.uuid4().hex}"
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('flows') / 'amparo.db'}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        await admin(cluster, f'CREATE DATABASE "{name}" TEMPLATE template0')
        url = f"{cluster.url}/{name}"
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()
    if cluster is not None:
        await admin(cluster, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def backend(shared_engine: AsyncEngine) -> str:
    return shared_engine.dialect.name


@pytest.fixture
async def engine(shared_engine: AsyncEngine) -> AsyncEngine:
    """The backend's database, emptied."""
    if shared_engine.dialect.name == "postgresql":
        async with shared_engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await empty_tables(raw.driver_connection)
        return shared_engine
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with shared_engine.begin() as conn:
        for table in tables:
            await conn.execute(text(f"DELETE FROM {table}"))
    return shared_engine


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return sessionmaker(engine)


@pytest.fixture(autouse=True)
def fast_pins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )
    yield


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)  # a Monday

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass(frozen=True)
class Pick:
    """A tapped button (the choice's key)."""

    key: str


@dataclass(frozen=True)
class Event:
    """Anything else a channel can deliver."""

    text: str | None = None
    location: Location | None = None
    attachments: tuple[InboundAttachment, ...] = ()
    forwarded: bool = False
    edited: bool = False
    private: bool = True
    message_id: str | None = None
    chat_message_id: str | None = None  # an edit names the message it edits


Said = str | Pick | Event


@dataclass
class Desk:
    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    clock: Clock
    org: Organisation
    private_key: bytes
    engine: Engine

    def restart(self) -> None:
        """A new engine, as after a process restart: nothing in memory survives."""
        self.engine = Engine(self.sessions, self.vault, clock=self.clock)

    async def invite(self) -> str:
        async with transaction(self.sessions) as s:
            _row, code = await create_invite(
                s, self.vault, org_id=self.org.id, purpose="defender", now=self.clock.now
            )
        return code

    def chat(self, address: str = "alice", *, language: str | None = "en") -> Chat:
        return Chat(self, address, language)


@dataclass
class Chat:
    desk: Desk
    address: str
    language: str | None
    channel: str = "console"
    sent: int = 0
    seen: set[uuid.UUID] = field(default_factory=set)

    async def say(self, said: Said) -> list[Outbound]:
        self.sent += 1
        event = (
            said
            if isinstance(said, Event)
            else Event(text=said if isinstance(said, str) else None)
        )
        inbound = Inbound(
            channel=self.channel,
            address=self.address,
            message_id=event.message_id or f"{self.address}-{uuid.uuid4().hex}",
            received_at=self.desk.clock.now,
            text=event.text,
            choice=said.key if isinstance(said, Pick) else None,
            location=event.location,
            attachments=event.attachments,
            language=self.language,
            forwarded=event.forwarded,
            edited=event.edited,
            private=event.private,
            chat_message_id=event.chat_message_id or str(self.sent),
        )
        await self.desk.engine.handle(inbound)
        return await self.received()

    async def text(self, said: Said) -> str:
        return "\n\n".join(m.text for m in await self.say(said))

    async def received(self) -> list[Outbound]:
        index = self.desk.vault.address_index(self.channel, self.address)
        async with self.desk.sessions() as s:
            rows = (
                await s.execute(
                    select(OutboxMessage)
                    .join(ChannelAddress, ChannelAddress.id == OutboxMessage.address_id)
                    .where(ChannelAddress.blind_index == index)
                    .order_by(OutboxMessage.next_attempt_at, OutboxMessage.created_at)
                )
            ).scalars()
            # A withdrawn message never left: its text is gone with it. The deletion of what
            # the defender sent (R12, a day later on Telegram) is not something they receive.
            fresh = [
                r
                for r in rows
                if r.id not in self.seen
                and r.last_error != WITHDRAWN
                and not r.idempotency_key.startswith(FORGOTTEN)
            ]
        self.seen |= {r.id for r in fresh}
        return [payload(self.desk.vault, r) for r in fresh]

    async def defender(self) -> Defender | None:
        index = self.desk.vault.address_index(self.channel, self.address)
        async with self.desk.sessions() as s:
            address = (
                await s.execute(select(ChannelAddress).where(ChannelAddress.blind_index == index))
            ).scalar_one_or_none()
            if address is None or address.defender_id is None:
                return None
            return await s.get(Defender, address.defender_id)


@pytest.fixture
async def desk(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> Desk:
    public, private = generate_org_keypair()
    clock = Clock()
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk", public_key=public)
        s.add(org)
    return Desk(sessions, vault, clock, org, private, Engine(sessions, vault, clock=clock))


FORGOTTEN = "del:in:"  # core.discreet.forget_later's rows (flows.store.forget_later's keys)
CANCEL_PIN = "4826"
DURESS_PIN = "9713"
ONBOARDING: Sequence[Said] = (
    Pick("lang:en"),
    Pick("continue"),
    CANCEL_PIN,
    CANCEL_PIN,
    DURESS_PIN,
    DURESS_PIN,
    "Bogota",
    Pick("later"),
    Pick("none"),
    Pick("skip"),
    Pick("skip"),
)


async def onboard(
    desk: Desk, address: str = "alice", *, language: str = "en", channel: str | None = None
) -> Chat:
    """A defender who went through onboarding (Bogotá, no contacts, no routine), on the
    console unless ``channel`` says otherwise (Signal numbers its options)."""
    chat = desk.chat(address, language=language)
    if channel is not None:
        chat.channel = channel
    await chat.say(await desk.invite())
    for said in (Pick(f"lang:{language}"), *ONBOARDING[1:]):
        await chat.say(said)
    defender = await chat.defender()
    assert defender is not None and defender.status.value == "active"
    return chat


def texts(messages: list[Outbound]) -> str:
    return "\n\n".join(m.text for m in messages)


async def run_dialog(chat: Chat, table: Sequence[tuple[Said, str]]) -> None:
    """Each input gets one reply that contains the expected fragment."""
    for said, expected in table:
        replies = await chat.say(said)
        assert len(replies) == 1, (said, replies)
        shown = replies[0].text.replace("\u202f", " ").replace("\xa0", " ")  # CLDR spaces
        assert expected in shown, (said, shown)
