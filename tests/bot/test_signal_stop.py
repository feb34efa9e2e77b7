"""The Signal channel stopping (a deploy's SIGTERM) even as its receiver lets go."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from bot.signal import Signal
from core.messages import Inbound


class FakeBot:
    """Just what ``Signal.run`` drives of a signalbot bot; its receiver never stops."""

    def __init__(self) -> None:
        self._pipeline = self

    def start(self, *, run_forever: bool) -> None:
        pass

    async def wait_until_ready(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_stop_landing_as_the_receiver_is_lost_still_stops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM in the very loop turn where the receiver lets go (as it does when the whole
    process is being stopped): the stop must not be lost. Python 3.11's ``asyncio.wait_for``
    returned the wake-up instead of raising the cancellation, and ``run`` started a new bot,
    for ever: a process that never stopped."""
    lost: list[asyncio.Event] = []

    def bot(lost_event: asyncio.Event) -> Any:
        lost.append(lost_event)
        return FakeBot()

    async def known(source: str) -> bool:
        return False

    async def inbox(inbound: Inbound) -> None:
        pass

    channel = Signal(service="127.0.0.1:9", number="+15550000000", known=known)
    monkeypatch.setattr(channel, "_bot", bot)
    monkeypatch.setattr(Signal, "_receiver_stopped", staticmethod(lambda bot: False))
    task = asyncio.create_task(channel.run(inbox))
    async with asyncio.timeout(10):
        while not (lost and lost[-1]._waiters):  # type: ignore[attr-defined]  # waiting on it
            await asyncio.sleep(0.01)
    lost[-1].set()
    await asyncio.sleep(0)  # the wait for ``lost`` is done; ``run`` has not resumed yet
    task.cancel()
    try:
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, "the Signal channel ignored its stop"
        assert task.cancelled()
    finally:
        task.cancel()  # without the fix: stop it for good
        with contextlib.suppress(asyncio.CancelledError):
            await task
