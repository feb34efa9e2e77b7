"""A stand-in channel: records what it is asked to send and fails on cue."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from core.messages import Address, Delivered, DeliveryError, Inbox, Outbound


class StandIn:
    name: ClassVar[str] = "standin"

    def __init__(self, name: str = "standin") -> None:
        self.channel = name
        self.calls: list[tuple[str, str]] = []  # every attempt: (address, text)
        self.sent: list[tuple[str, str]] = []  # the successful ones
        self.script: dict[str, list[DeliveryError | None]] = {}  # address -> outcomes in turn

    def fail(self, address: str, *outcomes: DeliveryError | None) -> None:
        self.script.setdefault(address, []).extend(outcomes)

    async def run(self, inbox: Inbox) -> None:
        await asyncio.Event().wait()

    async def send(self, to: Address, message: Outbound) -> Delivered:
        self.calls.append((to.value, message.text))
        plan = self.script.get(to.value)
        if plan:
            outcome = plan.pop(0)
            if outcome is not None:
                raise outcome
        self.sent.append((to.value, message.text))
        return Delivered(message_id=str(len(self.sent)))

    def to(self, address: str) -> list[str]:
        return [text for value, text in self.sent if value == address]
