"""A defender's file whose message does not say its size (Telegram does not always send
``file_size``) is fetched and judged by what getFile says, not refused as too large; one that
is too large is still refused, and its message still reaches the flows."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import Telegram
from core.crypto import Vault
from core.media import MAX_BYTES
from core.messages import Inbound
from tests.bot.test_telegram import CHAT, api, clock, enrol, inbox, telegram, wait_for
from tests.standins.telegram_api import TelegramStandIn

__all__ = ["api", "clock", "inbox", "telegram"]  # the fixtures, shared with test_telegram


def document(api: TelegramStandIn, file_id: str, data: bytes | None = None) -> dict[str, Any]:
    """A document sent by the defender, its size left out of the update."""
    if data is not None:
        api.files[file_id] = data
    body = {"file_id": file_id, "file_unique_id": f"u-{file_id}", "mime_type": "application/pdf"}
    return api.push("message", api._message(CHAT, document=body, caption=file_id))


async def test_a_defenders_file_of_unknown_size_reaches_the_flows(
    api: TelegramStandIn,
    telegram: Telegram,
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    await enrol(sessions, vault, CHAT)
    document(api, "statement", b"%PDF-1.7 what happened")
    await wait_for(lambda: inbox)
    [got] = inbox[0].attachments
    assert got.data == b"%PDF-1.7 what happened", "refused as too large"
    assert (got.kind, got.size, got.filename) == ("document", 22, None)


async def test_a_file_of_unknown_size_that_is_too_large_is_still_refused(
    api: TelegramStandIn,
    telegram: Telegram,
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    await enrol(sessions, vault, CHAT)
    document(api, "huge", b"%PDF-" + b"x" * MAX_BYTES)  # getFile says its size
    await wait_for(lambda: inbox)
    # Telegram's own getFile refuses what is over 20 MB: a refusal, not a failed update.
    api.fail_next("getFile", 400, "Bad Request: file is too big")
    document(api, "bigger")
    await wait_for(lambda: len(inbox) == 2)
    huge, bigger = (i.attachments[0] for i in inbox)
    assert huge.data is None and huge.size == MAX_BYTES + 5
    assert bigger.data is None
    assert [i.text for i in inbox] == ["huge", "bigger"]  # the messages reach the flows
    assert [c.status for c in api.calls if c.method == "getFile"] == [200, 400]
