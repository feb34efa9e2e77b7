"""A responder group that Telegram upgrades to a supergroup (a new chat id) stays the desk's
group, whether the bot hears the service message first or a send is refused with the new id."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import Telegram
from core import alerts, notices
from core.crypto import Vault
from core.db import transaction
from core.dispatch import Dispatcher
from core.models import AlertKind, Defender
from tests.bot import test_telegram_desk as desk
from tests.bot.test_telegram_desk import GROUP, RESPONDER, Clock, in_group, said_to, until
from tests.standins.telegram_api import TelegramStandIn

SUPERGROUP = -1009876543210
api, running = desk.api, desk.running  # the same fixtures: a stand-in, PTB, engine, outbox
Running = tuple[Telegram, Dispatcher, Clock]


async def linked(
    api: TelegramStandIn,
    running: Running,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> Defender:
    """An organisation whose responder linked her chat and the group; its defender."""
    _channel, dispatcher, clock = running
    defender, code, group_code = await desk.desk_org(sessions, vault, clock.now)
    api.send_text(RESPONDER, f"/desk {code}")
    in_group(api, RESPONDER, f"/desk {group_code}")
    await until(dispatcher, clock, lambda: said_to(api, GROUP) and said_to(api, RESPONDER))
    return defender


async def raise_alert(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    defender: Defender,
    clock: Clock,
) -> str:
    async with transaction(sessions) as s:
        found = await s.get(Defender, defender.id)
        assert found is not None
        alert = await alerts.raise_alert(
            s, vault, defender=found, kind=AlertKind.panic, now=clock.now
        )
    return notices.short_code(alert.id)


async def test_the_service_message_moves_the_group(
    api: TelegramStandIn,
    running: Running,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    _channel, dispatcher, clock = running
    defender = await linked(api, running, sessions, vault)
    in_group(api, RESPONDER, kind="group", migrate_to_chat_id=SUPERGROUP)  # Telegram's notice
    in_group(api, RESPONDER, "/ack ZZZZZZ", chat=SUPERGROUP)  # answered in the desk group only
    await until(dispatcher, clock, lambda: said_to(api, SUPERGROUP))
    assert said_to(api, SUPERGROUP)[0]["text"] == "No open alert has that code."
    short = await raise_alert(sessions, vault, defender, clock)
    await until(dispatcher, clock, lambda: len(said_to(api, SUPERGROUP)) == 2)
    assert said_to(api, SUPERGROUP)[1]["text"].startswith("EMERGENCY: calm-otter-7")
    assert len(said_to(api, GROUP)) == 1  # only the link's confirmation, before the move
    in_group(api, RESPONDER, f"/ack {short}", chat=SUPERGROUP)
    await until(dispatcher, clock, lambda: len(said_to(api, SUPERGROUP)) == 3)
    assert said_to(api, SUPERGROUP)[2]["text"].startswith(f"ana acknowledged alert {short}")


async def test_another_groups_move_is_ignored(
    api: TelegramStandIn,
    running: Running,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    _channel, dispatcher, clock = running
    await linked(api, running, sessions, vault)
    in_group(api, RESPONDER, chat=-4242, kind="group", migrate_to_chat_id=SUPERGROUP)
    in_group(api, RESPONDER, "/ack ZZZZZZ", chat=SUPERGROUP)  # not our group: never answered
    in_group(api, RESPONDER, "/ack ZZZZZZ")  # still ours
    await until(dispatcher, clock, lambda: len(said_to(api, GROUP)) == 2)
    assert said_to(api, GROUP)[1]["text"] == "No open alert has that code."
    assert said_to(api, SUPERGROUP) == []


async def test_a_send_refused_with_the_new_id_goes_there_and_so_do_the_next(
    api: TelegramStandIn,
    running: Running,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    _channel, dispatcher, clock = running
    defender = await linked(api, running, sessions, vault)
    api.fail_next(
        "sendMessage",
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        {"migrate_to_chat_id": SUPERGROUP},
        chat_id=GROUP,
    )
    short = await raise_alert(sessions, vault, defender, clock)
    await until(dispatcher, clock, lambda: said_to(api, SUPERGROUP))
    assert said_to(api, SUPERGROUP)[0]["text"].startswith("EMERGENCY: calm-otter-7")
    # the group's link moved with it: it is the desk's group under the new id
    in_group(api, RESPONDER, f"/ack {short}", chat=SUPERGROUP)
    await until(dispatcher, clock, lambda: len(said_to(api, SUPERGROUP)) == 2)
    assert said_to(api, SUPERGROUP)[1]["text"].startswith(f"ana acknowledged alert {short}")
    to_old = [c for c in api.calls if c.method == "sendMessage" and c.params["chat_id"] == GROUP]
    assert [c.status for c in to_old] == [200, 400]  # the link's confirmation, then the refusal
