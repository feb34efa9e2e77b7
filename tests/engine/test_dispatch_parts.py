"""core.delivery with a channel that sends in parts and fails partway (``DeliveryError.sent``):
the parts sent are kept with the row for the retry, and a fallback elsewhere sends the message
whole. The stand-in channel; SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import Vault
from core.messages import Address, Delivered, DeliveryError, Outbound
from tests.engine.conftest import T0
from tests.engine.standin import StandIn
from tests.engine.test_dispatch import SEC, dispatcher, panic, standin_world


class Parts(StandIn):
    """Keeps each message it is asked to send, as the dispatcher built it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.messages: list[tuple[str, Outbound]] = []

    async def send(self, to: Address, message: Outbound) -> Delivered:
        self.messages.append((to.value, message))
        return await super().send(to, message)


async def test_the_parts_sent_are_kept_for_the_retry_and_a_fallback_sends_it_whole(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    world = await standin_world(sessions, vault)
    main, backup = Parts("standin"), Parts("backup")
    contact, responder = "c1-quiet-heron-41", "r0-quiet-heron-41"
    main.fail(contact, DeliveryError("HTTP 502", sent=("p1",)), DeliveryError("HTTP 503"))
    main.fail(contact, DeliveryError("HTTP 502", sent=("p2",)))
    main.fail(responder, DeliveryError("forbidden", permanent=True, sent=("p1",)))
    d = dispatcher(world, {"standin": main, "backup": backup})
    await panic(world)
    for seconds in (0, 10, 20, 40):
        await d.drain(T0 + seconds * SEC)
    tries = [m.sent_parts for to, m in main.messages if to == contact]
    assert tries == [(), ("p1",), ("p1",), ("p1", "p2")]  # a try sending nothing keeps them
    assert main.to(contact) != []  # delivered in the end
    [(to, whole)] = backup.messages  # the responder's other address: the message whole
    assert to == "r0-backup" and whole.sent_parts == ()
