"""bot/telegram.py with the real python-telegram-bot against the Bot API stand-in."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram import POISON_TRIES, Telegram, split_text
from core.callbacks import Chat
from core.crypto import Vault, generate_org_keypair
from core.db import transaction
from core.defenders import new_address
from core.discreet import NOT_DELETED
from core.messages import (
    Address,
    Attachment,
    Choice,
    DeliveryError,
    Inbound,
    NotHandled,
    Outbound,
)
from core.models import Defender, Organisation
from tests.standins.telegram_api import TelegramStandIn

SECRET = "s" * 40
CHAT = 7319046682


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def wait_for(condition: Callable[[], object], seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
async def api() -> AsyncIterator[TelegramStandIn]:
    stand_in = TelegramStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def inbox() -> list[Inbound]:
    return []


@pytest.fixture
async def telegram(
    api: TelegramStandIn,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: Clock,
    inbox: list[Inbound],
) -> AsyncIterator[Telegram]:
    channel = Telegram(
        token=api.token, api_url=api.base_url, sessions=sessions, vault=vault, clock=clock
    )

    async def receive(inbound: Inbound) -> None:
        inbox.append(inbound)

    task = asyncio.create_task(channel.run(receive))
    await asyncio.wait_for(channel.ready.wait(), 10)
    yield channel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_it_turns_updates_into_inbound_events(
    api: TelegramStandIn, telegram: Telegram, inbox: list[Inbound]
) -> None:
    update = api.send_text(CHAT, "/start", language="pt-br")
    api.send_text(
        CHAT, "OK", forward_origin={"type": "hidden_user", "date": 1, "sender_user_name": "x"}
    )
    group = api._message(-100, text="hi")
    group["chat"] = {"id": -100, "type": "group", "title": "g"}
    api.push("message", group)
    old = api._message(CHAT, text="OK")
    api.push("edited_message", {**old, "edit_date": 2})
    api.send_location(CHAT, 52.52, 13.405, live=900)
    await wait_for(lambda: len(inbox) == 4)
    first = inbox[0]
    assert (first.channel, first.address, first.text, first.language) == (
        "telegram",
        str(CHAT),
        "/start",
        "pt-br",
    )
    assert first.message_id == str(update["update_id"])
    assert first.chat_message_id == str(update["message"]["message_id"])
    assert inbox[1].forwarded and not inbox[0].forwarded
    assert inbox[2].edited and inbox[2].text == "OK"  # the group message never arrived
    location = inbox[3].location
    assert location is not None and location.live and location.latitude == 52.52
    assert [c.method for c in api.calls][:3] == ["getMe", "deleteWebhook", "getUpdates"]


async def test_it_renders_choices_as_opaque_single_use_tokens(
    api: TelegramStandIn, telegram: Telegram, inbox: list[Inbound], clock: Clock
) -> None:
    question = Outbound("Can you talk?", choices=(Choice("yes", "Yes"), Choice("no", "No")))
    await telegram.send(Address("telegram", str(CHAT)), question)
    keyboard = api.sent()[0]["reply_markup"]["inline_keyboard"]
    tokens = [row[0]["callback_data"] for row in keyboard]
    assert [row[0]["text"] for row in keyboard] == ["Yes", "No"]
    assert not {"yes", "no"} & set(tokens) and all(len(t.encode()) <= 64 for t in tokens)

    api.press(CHAT + 1, tokens[0])  # someone else's chat
    api.press(CHAT, "x" * 64)  # garbage
    api.press(CHAT, tokens[1])
    await wait_for(lambda: inbox)
    api.press(CHAT, tokens[0])  # the sibling died with the first press
    await wait_for(lambda: len(api.sent("answerCallbackQuery")) == 4)
    assert [i.choice for i in inbox] == ["no"]
    refusals = [a for a in api.sent("answerCallbackQuery") if a.get("text")]
    assert len(refusals) == 3 and "no longer works" in refusals[0]["text"]
    assert api.sent("editMessageReplyMarkup")  # the used keyboard is removed

    await telegram.send(Address("telegram", str(CHAT)), question)
    late = api.sent()[-1]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    clock.now += timedelta(hours=25)
    api.press(CHAT, late)
    await wait_for(lambda: len(api.sent("answerCallbackQuery")) == 5)
    assert len(inbox) == 1  # expired: refused, nothing reached the flows

    # An alert button is still an alert button on a menu from last week (not a day).
    alarm = Outbound("What now?", choices=(Choice("panic", "Alert my contacts now"),))
    await telegram.send(Address("telegram", str(CHAT)), alarm)
    panic = api.sent()[-1]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    clock.now += timedelta(days=7)
    api.press(CHAT, panic)
    await wait_for(lambda: len(inbox) == 2)
    assert inbox[-1].choice == "panic"


async def test_it_asks_for_location_and_splits_long_texts(
    api: TelegramStandIn, telegram: Telegram
) -> None:
    to = Address("telegram", str(CHAT))
    await telegram.send(to, Outbound("Where are you?", request_location=True))
    markup = api.sent()[0]["reply_markup"]
    assert markup["keyboard"][0][0]["request_location"] is True
    assert markup["one_time_keyboard"] is True
    long = ("word " * 2000).strip()
    delivered = await telegram.send(to, Outbound(long, choices=(Choice("ok", "OK"),)))
    parts = api.sent()[1:]
    assert len(parts) == 3 and all(len(p["text"]) <= 4096 for p in parts)
    assert " ".join(p["text"] for p in parts) == long
    assert "inline_keyboard" in parts[-1]["reply_markup"]
    assert "parse_mode" not in parts[0]
    assert delivered.message_id is not None
    await telegram.send(
        to, Outbound("Evidence", attachments=(Attachment("r.txt", "text/plain", b"x"),))
    )
    assert api.sent("sendDocument")


async def test_a_location_request_with_a_skip_is_a_reply_keyboard(
    api: TelegramStandIn, telegram: Telegram, inbox: list[Inbound]
) -> None:
    """One keyboard per message, and only a reply keyboard asks for a location: its "Skip"
    is a text button (sending its label), never an inline one hiding the request."""
    to = Address("telegram", str(CHAT))
    asked = Outbound("Share your location?", (Choice("skip", "Omitir"),), request_location=True)
    await telegram.send(to, asked)
    markup = api.sent()[0]["reply_markup"]
    assert "inline_keyboard" not in markup
    assert markup["keyboard"][0][0]["request_location"] is True
    assert markup["keyboard"][1] == [{"text": "Omitir"}]
    assert markup["one_time_keyboard"] is True
    await telegram.send(to, Outbound("Can you talk?", (Choice("yes", "Yes"),)))
    assert "inline_keyboard" in api.sent()[1]["reply_markup"]  # the next choices: inline
    await telegram.send(to, Outbound("Thank you."))
    assert api.sent()[2]["reply_markup"] == {"remove_keyboard": True}  # and it goes away


def test_it_splits_at_word_boundaries() -> None:
    assert split_text("abc", 10) == ["abc"]
    assert split_text("aaaa bbbb cccc", 10) == ["aaaa bbbb", "cccc"]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


async def test_it_classifies_delivery_errors(api: TelegramStandIn, telegram: Telegram) -> None:
    to = Address("telegram", str(CHAT))
    api.fail_next("sendMessage", 429, "Too Many Requests: retry after 7", {"retry_after": 7})
    with pytest.raises(DeliveryError) as limited:
        await telegram.send(to, Outbound("hi"))
    assert limited.value.retry_after == 7 and not limited.value.permanent
    api.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    with pytest.raises(DeliveryError) as blocked:
        await telegram.send(to, Outbound("hi"))
    assert blocked.value.permanent
    api.fail_next("sendMessage", 502, "Bad Gateway")
    with pytest.raises(DeliveryError) as flaky:
        await telegram.send(to, Outbound("hi"))
    assert not flaky.value.permanent and flaky.value.retry_after is None
    assert str(CHAT) not in str(blocked.value)


async def test_it_deletes_messages_on_instruction(
    api: TelegramStandIn, telegram: Telegram
) -> None:
    to = Address("telegram", str(CHAT))
    await telegram.send(to, Outbound("", delete_message_ids=("5", "6")))
    assert api.sent("deleteMessages") == [{"chat_id": CHAT, "message_ids": [5, 6]}]
    api.fail_next("deleteMessages", 400, "Bad Request: message to delete not found")
    await telegram.send(to, Outbound("", delete_message_ids=("5",)))  # already gone: done
    await telegram.send(to, Outbound("Which language?", delete_message_ids=("7",)))
    assert api.sent()[-1]["text"] == "Which language?"  # a reply may carry a deletion too


async def test_it_says_so_when_telegram_refuses_a_deletion_as_too_old(
    api: TelegramStandIn, telegram: Telegram
) -> None:
    """R12: a message past Telegram's 48 hours stays on the phone: a permanent refusal the
    engine alarms on, never a deletion done; the other batches are still deleted."""
    to = Address("telegram", str(CHAT))
    pin = await telegram.send(to, Outbound("Your PIN is set."))
    api.clock = lambda: time.time() + 47 * 3600  # within the limit: deleted
    await telegram.send(to, Outbound("", delete_message_ids=(pin.message_id or "",)))
    assert api.sent("deleteMessages")[-1]["message_ids"] == [int(pin.message_id or 0)]
    api.clock = lambda: time.time() + 49 * 3600
    fresh = await telegram.send(to, Outbound("Your report was received."))
    unknown = tuple(str(n) for n in range(5000, 5099))
    ids = (pin.message_id or "", *unknown, fresh.message_id or "")  # two batches
    with pytest.raises(DeliveryError) as refused:
        await telegram.send(to, Outbound("", delete_message_ids=ids))
    assert refused.value.permanent and str(refused.value) == NOT_DELETED
    first, second = [c for c in api.calls if c.method == "deleteMessages"][-2:]
    assert first.status == 400 and len(first.params["message_ids"]) == 100
    assert second.status == 200 and second.params["message_ids"] == [int(fresh.message_id or 0)]


async def test_it_sends_nothing_for_an_instruction_it_cannot_follow(
    api: TelegramStandIn, telegram: Telegram
) -> None:
    """Signal's disappearing-messages timer reaching a Telegram chat: never an empty message."""
    delivered = await telegram.send(Address("telegram", str(CHAT)), Outbound("", expiry_s=3600))
    assert delivered.message_id is None
    assert api.sent() == []


async def enrol(sessions: async_sessionmaker[AsyncSession], vault: Vault, chat: int) -> None:
    """A defender reached in ``chat``."""
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Desk", public_key=generate_org_keypair()[0])
        s.add(org)
        await s.flush()
        defender = Defender(id=uuid.uuid4(), org_id=org.id, handle="h-1")
        s.add(defender)
        await s.flush()
        address = new_address(vault, "telegram", str(chat))
        address.defender_id = defender.id
        s.add(address)


async def test_it_checks_file_size_before_downloading(
    api: TelegramStandIn,
    telegram: Telegram,
    inbox: list[Inbound],
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    api.send_photo(CHAT + 5, b"\xff\xd8stranger", file_id="stranger")  # nobody we know
    await wait_for(lambda: len(inbox) == 1)
    assert inbox.pop().attachments[0].data is None
    await enrol(sessions, vault, CHAT)
    api.send_photo(CHAT, b"\xff\xd8small", file_id="small")
    big = api._message(
        CHAT,
        document={
            "file_id": "big",
            "file_unique_id": "b",
            "file_size": 20 * 1024 * 1024 + 1,
            "mime_type": "application/zip",
        },
    )
    api.push("message", big)
    await wait_for(lambda: len(inbox) == 2)
    small, huge = inbox[0].attachments[0], inbox[1].attachments[0]
    assert (small.kind, small.data) == ("photo", b"\xff\xd8small")
    assert huge.data is None and huge.size == 20 * 1024 * 1024 + 1
    assert [c.params["file_id"] for c in api.calls if c.method == "getFile"] == ["small"]


async def test_it_retries_an_update_the_flows_failed_on(
    api: TelegramStandIn, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    channel = Telegram(token=api.token, api_url=api.base_url, sessions=sessions, vault=vault)
    seen: list[str] = []

    async def flaky(inbound: Inbound) -> None:
        seen.append(inbound.message_id)
        if len(seen) == 1:
            raise RuntimeError("database went away")

    task = asyncio.create_task(channel.run(flaky))
    api.send_text(CHAT, "help")
    await wait_for(lambda: len(seen) == 2)
    task.cancel()
    assert seen[0] == seen[1]  # the same update came again: nothing lost


async def test_it_guards_the_webhook_with_the_secret(
    api: TelegramStandIn, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    channel = Telegram(
        token=api.token,
        api_url=api.base_url,
        sessions=sessions,
        vault=vault,
        webhook_url="https://desk.example/hooks/telegram",
        webhook_secret=SECRET,
    )
    received: list[Inbound] = []

    async def receive(inbound: Inbound) -> None:
        if inbound.text == "poison":
            raise RuntimeError("this update always fails")
        received.append(inbound)

    task = asyncio.create_task(channel.run(receive))
    await asyncio.wait_for(channel.ready.wait(), 10)
    assert api.webhook_url == "https://desk.example/hooks/telegram"
    assert api.sent("setWebhook")[0]["secret_token"] == SECRET
    app = FastAPI()
    app.add_api_route("/hooks/telegram", channel.webhook, methods=["POST"])
    update = {"update_id": 9, "message": api._message(CHAT, text="hola")}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for headers in (
            {},
            {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
            {"X-Telegram-Bot-Api-Secret-Token": SECRET[:-1]},
            {"X-Telegram-Bot-Api-Secret-Token": SECRET.upper()},
        ):
            assert (
                await c.post("/hooks/telegram", json=update, headers=headers)
            ).status_code == 401
        assert received == []
        good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        assert (await c.post("/hooks/telegram", content=b"{", headers=good)).status_code == 400
        assert (await c.post("/hooks/telegram", json=update, headers=good)).status_code == 200
        # An update that keeps failing: sent again twice (500), then let go as polling does.
        poison = {"update_id": 10, "message": api._message(CHAT, text="poison")}
        answers = [
            (await c.post("/hooks/telegram", json=poison, headers=good)).status_code
            for _ in range(3)
        ]
        assert answers == [500, 500, 200]
    assert [i.text for i in received] == ["hola"]
    task.cancel()


async def test_a_press_survives_a_failed_acknowledgement(
    api: TelegramStandIn, telegram: Telegram, inbox: list[Inbound]
) -> None:
    """answerCallbackQuery answering 502 (or "query is too old" after downtime) must not
    cost the press: retrying cannot make an old query answerable."""
    question = Outbound("Are you safe?", choices=(Choice("yes", "Yes"), Choice("no", "No")))
    await telegram.send(Address("telegram", str(CHAT)), question)
    token = api.sent()[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    api.fail_next("answerCallbackQuery", 502, "Bad Gateway")
    api.press(CHAT, token)
    api.send_text(CHAT, "marker")
    await wait_for(lambda: any(i.text == "marker" for i in inbox), seconds=15)
    assert [i.choice for i in inbox if i.choice] == ["yes"], "the press was lost"


def test_the_derived_button_is_the_flows_alert_choice() -> None:
    from core.callbacks import ALERT
    from flows.words import ALERT_CHOICE

    assert ALERT_CHOICE == ALERT


def _chat(vault: Vault, chat: int) -> Chat:
    return Chat("telegram", str(chat), vault.address_index("telegram", str(chat)))


async def test_a_button_token_with_its_case_changed_is_refused(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """R4: a mutated token is another token (it was case-folded like an address before)."""
    from core import callbacks

    chat, now = _chat(vault, CHAT), datetime.now(UTC)
    async with transaction(sessions) as s:
        tokens = await callbacks.issue(s, vault, chat=chat, choices=["yes", "panic"], now=now)
    for token in tokens:  # a stored one, and the alert button's (derived from the chat)
        for mutated in (token.swapcase(), f" {token} ", token.upper(), token[:-1]):
            if mutated != token:
                async with transaction(sessions) as s:
                    found = await callbacks.redeem(s, vault, token=mutated, chat=chat, now=now)
                assert found is None
    for token, choice in zip(tokens, ["yes", "panic"], strict=True):
        async with transaction(sessions) as s:
            found = await callbacks.redeem(s, vault, token=token, chat=chat, now=now)
        assert found == choice


async def test_a_button_sent_before_exact_tokens_still_works(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """Keyboards already on defenders' screens at the upgrade keep working until they expire."""
    import uuid as _uuid

    from sqlalchemy import insert

    from core.models import CallbackToken

    chat, now = _chat(vault, CHAT), datetime(2026, 12, 5, tzinfo=UTC)
    row = {
        "token_index": vault.blind_index("callback", "OldToken-123"),  # how they were stored
        "chat_index": chat.index,
        "keyboard": _uuid.uuid4(),
        "choice": "panic",
        "expires_at": now + timedelta(days=30),
    }
    async with transaction(sessions) as s:
        await s.execute(insert(CallbackToken), [row])
    from core import callbacks

    async with transaction(sessions) as s:
        found = await callbacks.redeem(s, vault, token="OldToken-123", chat=chat, now=now)
    assert found == "panic"


async def test_the_alert_button_is_keyed_per_chat_stored_nowhere_and_never_expires(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """Not to be worked out from the chat id without the index key; nothing in the table."""
    from sqlalchemy import func, select

    from core import callbacks
    from core.crypto import Keyring
    from core.models import CallbackToken

    chat, now = _chat(vault, CHAT), datetime.now(UTC)
    async with transaction(sessions) as s:
        (token,) = await callbacks.issue(s, vault, chat=chat, choices=["panic"], now=now)
        assert await s.scalar(select(func.count()).select_from(CallbackToken)) == 0
    assert len(token) == 22 and len(token.encode()) <= 64
    other = Vault(Keyring.generate())  # another deployment's key: another token
    assert callbacks.alert_token(other, _chat(other, CHAT)) != token
    elsewhere = _chat(vault, CHAT + 1)
    # Derived from the chat's address index until 2026-12-08: those on screens still work.
    mac = vault.exact_index("alert-button", chat.index.hex())
    before = base64.urlsafe_b64encode(mac).decode()[:22]
    assert before != token
    for later in (now + timedelta(days=31), now + timedelta(days=3650)):
        async with transaction(sessions) as s:
            assert await callbacks.redeem(s, vault, token=before, chat=chat, now=later) == "panic"
            assert (
                await callbacks.redeem(s, vault, token=before, chat=elsewhere, now=later) is None
            )
        async with transaction(sessions) as s:
            assert await callbacks.redeem(s, vault, token=token, chat=chat, now=later) == ("panic")
            assert await callbacks.redeem(s, vault, token=token, chat=elsewhere, now=later) is None


async def test_an_alert_button_stored_before_it_was_derived_works_until_it_expires(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    """Menus on defenders' screens at the upgrade: their alert button's row lasts 30 days."""
    from sqlalchemy import insert

    from core import callbacks
    from core.models import CallbackToken

    chat, sent = _chat(vault, CHAT), datetime(2026, 12, 6, tzinfo=UTC)
    row = {
        "token_index": vault.exact_index("callback", "StoredAlert-123"),  # how it was stored
        "chat_index": chat.index,
        "keyboard": uuid.uuid4(),
        "choice": "panic",
        "expires_at": sent + timedelta(days=30),
    }
    for days, choice in ((31, None), (29, "panic")):
        async with transaction(sessions) as s:
            await s.execute(insert(CallbackToken), [row])
            found = await callbacks.redeem(
                s, vault, token="StoredAlert-123", chat=chat, now=sent + timedelta(days=days)
            )
        assert found == choice


async def test_an_update_is_kept_while_the_database_is_down(
    api: TelegramStandIn,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine could neither handle nor answer it (NotHandled, transient): the update is
    not let go as poison after POISON_TRIES, however long the outage (R27)."""
    from bot import telegram as module

    monkeypatch.setattr(module, "STALLED_S", 0.01)
    channel = Telegram(token=api.token, api_url=api.base_url, sessions=sessions, vault=vault)
    seen: list[str] = []

    async def down(inbound: Inbound) -> None:
        seen.append(inbound.message_id)
        if len(seen) <= POISON_TRIES + 2:
            raise NotHandled(transient=True)

    task = asyncio.create_task(channel.run(down))
    api.send_text(CHAT, "/sos")
    await wait_for(lambda: len(seen) == POISON_TRIES + 3)
    task.cancel()
    assert len(set(seen)) == 1  # the same update each time, until it was handled
    app = FastAPI()
    hooked = Telegram(
        token=api.token,
        api_url=api.base_url,
        sessions=sessions,
        vault=vault,
        webhook_url="https://desk.example/hooks/telegram",
        webhook_secret=SECRET,
    )
    hooked.inbox = down
    app.add_api_route("/hooks/telegram", hooked.webhook, methods=["POST"])
    update = {"update_id": 11, "message": api._message(CHAT, text="/sos")}
    seen.clear()
    good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        answers = [
            (await c.post("/hooks/telegram", json=update, headers=good)).status_code
            for _ in range(POISON_TRIES + 3)
        ]
    assert answers == [503] * (POISON_TRIES + 2) + [200]  # Telegram keeps sending it


async def test_it_says_how_long_it_could_not_fetch_messages(
    api: TelegramStandIn, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    channel = Telegram(token=api.token, api_url=api.base_url, sessions=sessions, vault=vault)

    async def receive(_inbound: Inbound) -> None:
        return None

    task = asyncio.create_task(channel.run(receive))
    await asyncio.wait_for(channel.ready.wait(), 10)
    assert channel.inbound_down_s() == 0.0
    api.fail_next("getUpdates", 401, "Unauthorized", times=1000)  # the token was revoked
    api.send_text(CHAT, "wake the long poll")
    await wait_for(lambda: channel.inbound_down_s() > 0.5, seconds=10)
    task.cancel()
