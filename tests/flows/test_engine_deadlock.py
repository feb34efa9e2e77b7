"""PostgreSQL aborts the transaction handling a defender's message to break a deadlock with
another worker's (40P01): the engine runs it again, whole, like a lost version check. The
defender gets the normal answer once, not "something went wrong"; what the message asked
for (an alert, a check-in) is written once. Both backends (``tests.deadlocks``)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from core.models import Alert, AlertKind, CheckIn, CheckInState, OutboxMessage
from flows import store
from tests.deadlocks import deadlock
from tests.flows.conftest import Desk, Pick, onboard, texts

SORRY = "something went wrong"


@pytest.fixture
def one_deadlock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next reply queued is aborted by a deadlock, once: after everything else the
    message wrote in its transaction, which must be rolled back and written again."""
    real, left = store.reply, [0]

    async def aborted(event: store.Event, *args: Any, **kwargs: Any) -> None:
        if left[0] > 0:
            left[0] -= 1
            await deadlock(event.session)
        await real(event, *args, **kwargs)

    monkeypatch.setattr(store, "reply", aborted)
    return left


async def test_it_raises_a_panic_once_and_answers_normally(
    desk: Desk, one_deadlock: list[int]
) -> None:
    alice = await onboard(desk)
    one_deadlock[0] = 1
    answer = texts(await alice.say("/sos"))
    assert one_deadlock == [0]
    assert "Alert sent." in answer
    assert SORRY not in answer
    async with desk.sessions() as s:
        assert [a.kind for a in (await s.execute(select(Alert))).scalars()] == [AlertKind.panic]
        queued = select(OutboxMessage.idempotency_key).where(OutboxMessage.recipient == "defender")
        keys = list((await s.execute(queued)).scalars())
    assert len(keys) == len(set(keys))


async def test_it_arms_a_check_in_once_and_answers_normally(
    desk: Desk, one_deadlock: list[int]
) -> None:
    alice = await onboard(desk)
    await alice.say("/checkin")
    one_deadlock[0] = 1
    answer = texts(await alice.say(Pick("30m")))
    assert one_deadlock == [0]
    assert SORRY not in answer and answer
    async with desk.sessions() as s:
        armed = list((await s.execute(select(CheckIn))).scalars())
    assert [c.state for c in armed] == [CheckInState.armed]
    assert "next check-in is due" in await alice.text("/status")
