"""The desk's responders on Signal, with the real signalbot against the signal-cli stand-in,
through the flow engine and the outbox: a linked chat, the group, ACK and SAFE replies."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import signalbot._pipeline as pipeline
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.signal import Signal
from core import alerts, desk_chat, notices
from core.crypto import Vault
from core.db import transaction
from core.defenders import defender_lookup
from core.dispatch import Dispatcher
from core.models import (
    Alert,
    AlertKind,
    AlertState,
    Defender,
    DefenderStatus,
    Organisation,
    Responder,
    Role,
)
from flows.engine import Engine
from tests.standins.signal_cli import GROUP_ID, GROUP_INTERNAL_ID, SignalStandIn

ANA = "0b1e9a63-3c57-4d3c-9d25-6f1f1d3c0a11"
STRANGER = "7c0ffee0-3c57-4d3c-9d25-6f1f1d3c0a12"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
async def service() -> AsyncIterator[SignalStandIn]:
    stand_in = SignalStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def dispatcher(
    service: SignalStandIn, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> AsyncIterator[Dispatcher]:
    known = defender_lookup(sessions, vault, "signal")
    channel = Signal(
        service=service.service, number=service.number, known=known, clock=lambda: NOW
    )
    engine = Engine(sessions, vault, clock=lambda: NOW)
    task = asyncio.create_task(channel.run(engine.handle))
    await asyncio.wait_for(channel.ready.wait(), 15)
    await asyncio.wait_for(service.connected.wait(), 15)
    yield Dispatcher(sessions, vault, {"signal": channel}, owner="t", limits={}, clock=lambda: NOW)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await channel.close()


def said_to(service: SignalStandIn, recipient: str) -> list[str]:
    return [m["message"] for m in service.sent if m["recipients"] == [recipient]]


async def until(dispatcher: Dispatcher, done: Callable[[], object]) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await dispatcher.drain(NOW)
        await asyncio.sleep(0.02)


async def state(sessions: async_sessionmaker[AsyncSession], alert: Alert) -> AlertState:
    async with sessions() as s:
        found = await s.get(Alert, alert.id)
        assert found is not None
        return found.state


async def test_responders_link_and_act_from_the_group(
    service: SignalStandIn,
    dispatcher: Dispatcher,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk")
        s.add(org)
        await s.flush()
        me = Responder(
            id=uuid.uuid4(), org_id=org.id, username="ana", role=Role.admin, password_hash="x"
        )
        defender = Defender(
            id=uuid.uuid4(), org_id=org.id, handle="calm-otter-8", status=DefenderStatus.active
        )
        s.add_all([me, defender])
        await s.flush()
        code, _ = await desk_chat.responder_code(s, vault, responder=me, actor="t", now=NOW)
        group_code, _ = await desk_chat.group_code(
            s, vault, org_id=org.id, created_by=me.id, actor="t", now=NOW
        )
    service.add_group([ANA, STRANGER])

    await service.send_text(ANA, f"desk {code}")
    await until(dispatcher, lambda: said_to(service, ANA))
    assert "now linked" in said_to(service, ANA)[0]

    await service.send_group_text(ANA, "hello everyone")  # never read
    await service.send_group_text(ANA, f"Desk {group_code}")
    await until(dispatcher, lambda: said_to(service, GROUP_ID))
    assert "responder group" in said_to(service, GROUP_ID)[0]

    async with transaction(sessions) as s:
        found = await s.get(Defender, defender.id)
        assert found is not None
        alert = await alerts.raise_alert(s, vault, defender=found, kind=AlertKind.duress, now=NOW)
    short = notices.short_code(alert.id)
    await until(dispatcher, lambda: len(said_to(service, GROUP_ID)) == 2)
    assert said_to(service, GROUP_ID)[1].startswith("EMERGENCY: calm-otter-8 may be under")

    await service.send_group_text(STRANGER, f"ACK {short}")
    await until(dispatcher, lambda: len(said_to(service, GROUP_ID)) == 3)
    assert said_to(service, GROUP_ID)[2] == "Sorry, only the desk's responders can do that."
    assert (await state(sessions, alert)) is AlertState.triggered

    await service.send_group_text(ANA, f"ack {short.lower()}")
    await until(dispatcher, lambda: len(said_to(service, GROUP_ID)) == 4)
    assert said_to(service, GROUP_ID)[3] == f"ana acknowledged alert {short} (calm-otter-8)."
    assert (await state(sessions, alert)) is AlertState.acknowledged
    await service.send_group_text(ANA, f"SAFE {short}")
    await until(dispatcher, lambda: len(said_to(service, GROUP_ID)) == 5)
    assert said_to(service, GROUP_ID)[4] == f"ana resolved alert {short} (calm-otter-8) as safe."
    assert (await state(sessions, alert)) is AlertState.resolved

    timers: list[Any] = [b for _v, p, b in service.requests if p.startswith("/v1/contacts/")]
    assert all(b["recipient"] != GROUP_ID for b in timers)  # a group's timer is its own


async def test_a_group_command_signalbot_fails_on_is_still_acted_on(
    service: SignalStandIn,
    dispatcher: Dispatcher,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """signalbot looks a group it does not know up (GET /v1/groups) before it hands its
    message on: that failing no longer fails its receiver (which left the bot deaf while it
    restarted). A frame signalbot fails on anyway, or that its model refuses, never reached
    us (signal-cli has let go of it): a responder's command is read from the frame itself."""
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk")
        s.add(org)
        await s.flush()
        me = Responder(
            id=uuid.uuid4(), org_id=org.id, username="ana", role=Role.admin, password_hash="x"
        )
        defender = Defender(
            id=uuid.uuid4(), org_id=org.id, handle="calm-otter-8", status=DefenderStatus.active
        )
        s.add_all([me, defender])
        await s.flush()
        code, _ = await desk_chat.responder_code(s, vault, responder=me, actor="t", now=NOW)
        group_code, _ = await desk_chat.group_code(
            s, vault, org_id=org.id, created_by=me.id, actor="t", now=NOW
        )
        linked = await desk_chat.link_group(
            s, vault, code=group_code, channel="signal", group=GROUP_ID, now=NOW
        )
        assert linked == org.id
    await service.send_text(ANA, f"desk {code}")
    await until(dispatcher, lambda: said_to(service, ANA))
    async with transaction(sessions) as s:
        found = await s.get(Defender, defender.id)
        assert found is not None
        alert = await alerts.raise_alert(s, vault, defender=found, kind=AlertKind.duress, now=NOW)
    short = notices.short_code(alert.id)
    await until(dispatcher, lambda: said_to(service, GROUP_ID))

    # signalbot does not know the group (the list it fetched had none) and asks again: that
    # fails, and costs nothing (bot.signal_logs.lenient_groups): no restart, nobody unheard
    service.fail_next(f"/v1/groups/{service.number}", 500, "signal-cli daemon unavailable")
    socket = service.sockets[-1]
    await service.send_group_text(ANA, f"ACK {short}")
    await until(dispatcher, lambda: len(said_to(service, GROUP_ID)) == 2)
    assert said_to(service, GROUP_ID)[1] == f"ana acknowledged alert {short} (calm-otter-8)."
    assert (await state(sessions, alert)) is AlertState.acknowledged
    assert service.sockets[-1] is socket

    # signalbot fails on a frame it holds (any failure of its own): read from the frame
    real = pipeline.parse

    async def fails_once(signal: Any, raw: str) -> Any:
        pipeline.parse = real
        raise RuntimeError("signalbot failed")

    monkeypatch.setattr(pipeline, "parse", fails_once)
    await service.send_group_text(ANA, f"SAFE {short}")
    await until(dispatcher, lambda: len(said_to(service, GROUP_ID)) == 3)
    assert said_to(service, GROUP_ID)[2] == f"ana resolved alert {short} (calm-otter-8) as safe."
    assert (await state(sessions, alert)) is AlertState.resolved
    await until(dispatcher, lambda: service.sockets and service.sockets[-1] is not socket)

    # a frame signalbot's model refuses (an attachment without isVoiceNote)
    async with transaction(sessions) as s:
        found = await s.get(Defender, defender.id)
        assert found is not None
        alert = await alerts.raise_alert(s, vault, defender=found, kind=AlertKind.panic, now=NOW)
    short = notices.short_code(alert.id)
    await until(dispatcher, lambda: len(said_to(service, GROUP_ID)) == 4)
    meta = {"id": "grp9", "contentType": "image/jpeg", "filename": None, "size": 8}
    group = {"groupId": GROUP_INTERNAL_ID, "groupName": "Desk", "revision": 1, "type": "DELIVER"}
    await service.send_text(ANA, f"ACK {short}", groupInfo=group, attachments=[meta])
    await until(dispatcher, lambda: len(said_to(service, GROUP_ID)) == 5)
    assert said_to(service, GROUP_ID)[4] == f"ana acknowledged alert {short} (calm-otter-8)."
    assert (await state(sessions, alert)) is AlertState.acknowledged
    assert "grp9" in service.deleted  # a group's files are never read
