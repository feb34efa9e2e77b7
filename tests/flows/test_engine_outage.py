"""The database blinks while a panic is handled: the engine can neither handle nor answer it.
It must not report the event as done, or the channel confirms it and the panic is lost (R27):
it raises NotHandled, and the event handled again later raises the alert. Both backends."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core.messages import Inbound, NotHandled, handed
from core.models import Alert, AlertKind
from flows import store
from tests.flows.conftest import Desk, onboard

NOW = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)


async def test_a_panic_during_a_database_outage_is_not_confirmed_and_comes_again(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await onboard(desk, "7319046682", channel="telegram")
    real, failures = store.mark_seen, [2]  # the handling and its fallback, then it is back

    async def blinking(event: Any) -> bool:
        if failures[0] > 0:
            failures[0] -= 1
            raise OperationalError("INSERT INTO seen_inbound", {}, Exception("database is locked"))
        return await real(event)

    monkeypatch.setattr(store, "mark_seen", blinking)
    panic = Inbound(
        channel="telegram",
        address=alice.address,
        message_id=f"update-{uuid.uuid4().hex}",
        received_at=desk.clock.now,
        text="/sos",
        language="en",
        chat_message_id="99",
    )
    with pytest.raises(NotHandled) as outage:
        await desk.engine.handle(panic)
    assert outage.value.transient
    async with desk.sessions() as s:
        assert (await s.execute(select(Alert))).first() is None
    await desk.engine.handle(panic)  # the channel delivers it again: it was not recorded
    async with desk.sessions() as s:
        assert [a.kind for a in (await s.execute(select(Alert))).scalars()] == [AlertKind.panic]
    assert "Alert sent." in "\n".join(m.text for m in await alice.received())


def _event() -> Inbound:
    return Inbound(
        channel="signal", address="+15550001111", message_id="m", received_at=NOW, text="/sos"
    )


async def test_handed_retries_an_outage_and_gives_up_on_anything_else() -> None:
    calls: list[int] = []

    async def down_twice(_inbound: Inbound) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise NotHandled(transient=True)

    await handed(down_twice, _event(), patience_s=10)
    assert len(calls) == 3

    async def broken(_inbound: Inbound) -> None:
        calls.append(1)
        raise NotHandled(transient=False)

    calls.clear()
    with pytest.raises(NotHandled):
        await handed(broken, _event(), patience_s=10)
    assert len(calls) == 1  # no retry: it would fail the same way

    async def down(_inbound: Inbound) -> None:
        raise NotHandled(transient=True)

    with pytest.raises(NotHandled):  # past its patience, it says so instead of hanging
        await asyncio.wait_for(handed(down, _event(), patience_s=1), 5)
