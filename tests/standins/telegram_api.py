"""A Telegram Bot API stand-in on 127.0.0.1 that speaks the real wire format.

What python-telegram-bot sends (LIBRARIES.md §1.2): every method is a POST to
``/bot<token>/<method>`` with form-encoded (or multipart) parameters, each JSON-encoded on its
own except plain strings; answers are ``{"ok": true, "result": ...}`` or an error envelope with
the real status codes. ``getUpdates`` long-polls. Files are served under ``/file/bot<token>/``.

Tests push updates as a user would (``send_text``, ``press``, ``send_location`` and a live
one's updates ``move_location``, ``send_photo``), read what the bot did from ``calls``, and
inject failures with ``fail_next``. Messages age by ``clock`` (seconds, the wall clock unless
a test moves it): like Telegram, the stand-in refuses to delete one older than 48 hours.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_ID = 123456
TOKEN = f"{BOT_ID}:TEST-stand-in-token-0123456789abcdef"
MAX_TEXT = 4096
DELETE_LIMIT_S = 48 * 3600  # Telegram deletes a message for everyone only this long
TOO_OLD = "Bad Request: message can't be deleted for everyone"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int = 200  # what the stand-in answered


@dataclass
class Failure:
    status: int
    description: str
    parameters: dict[str, Any] | None = None
    chat_id: int | None = None  # only calls to this chat fail (None: any call)


def _decode(value: str) -> Any:
    # PTB JSON-encodes every parameter except plain strings, which arrive raw.
    try:
        return json.loads(value)
    except ValueError:
        return value


@dataclass
class TelegramStandIn:
    token: str = TOKEN
    calls: list[Call] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    webhook_url: str = ""
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _replays: list[dict[str, Any]] = field(default_factory=list)
    blocked: set[int] = field(default_factory=set)  # chats whose user blocked the bot
    # Called with each call the stand-in answered 200: counting as it goes (a benchmark) costs
    # nothing per check, where rescanning ``calls`` grows with every message sent.
    listeners: list[Callable[[Call], None]] = field(default_factory=list)
    _update_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0
    clock: Callable[[], float] = time.time
    _dates: dict[tuple[int, int], float] = field(default_factory=dict)  # (chat, message): sent

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self._arrived.set()  # release held long polls, or cleanup waits for them
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # --- what users do ---------------------------------------------------------------------

    def _user(self, chat_id: int, language: str | None) -> dict[str, Any]:
        user: dict[str, Any] = {"id": chat_id, "is_bot": False, "first_name": "Defender"}
        if language:
            user["language_code"] = language
        return user

    def _dated(self, chat_id: Any, message_id: int) -> int:
        self._dates[(int(chat_id), message_id)] = now = self.clock()
        return int(now)

    def _message(self, chat_id: int, language: str | None = "en", **body: Any) -> dict[str, Any]:
        number = next(self._message_ids)
        message = {
            "message_id": number,
            "date": self._dated(chat_id, number),
            "chat": {"id": chat_id, "type": "private", "first_name": "Defender"},
            "from": self._user(chat_id, language),
        }
        message.update(body)
        return message

    def push(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), kind: payload}
        self._updates.append(update)
        self._arrived.set()
        return update

    def send_text(
        self, chat_id: int, text: str, language: str | None = "en", **extra: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text, **extra}
        if text.startswith("/"):
            command = text.split()[0]
            body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self.push("message", self._message(chat_id, language, **body))

    def press(self, chat_id: int, data: str, message_id: int = 1) -> dict[str, Any]:
        message = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Bot"},
            "text": "…",
        }
        query = {
            "id": f"cbq{next(self._update_ids)}",
            "chat_instance": f"ci-{chat_id}",
            "from": self._user(chat_id, "en"),
            "data": data,
            "message": message,
        }
        return self.push("callback_query", query)

    def send_location(self, chat_id: int, lat: float, lon: float, live: int = 0) -> dict[str, Any]:
        location: dict[str, Any] = {"latitude": lat, "longitude": lon}
        if live:
            location["live_period"] = live
        return self.push("message", self._message(chat_id, location=location))

    def move_location(
        self, message: dict[str, Any], lat: float, lon: float, live: int = 0, **extra: Any
    ) -> dict[str, Any]:
        """An update of the live location ``message`` (as ``send_location`` pushed it): an
        ``edited_message``, as Telegram sends one. While it is live each carries the period
        (``live``, seconds from the message's sending: Location.live_period is "for active
        live locations only"); the last, sent when the person stops sharing, has none
        (``live=0``), as practice shows with ``horizontal_accuracy`` set (``extra``)."""
        location: dict[str, Any] = {"latitude": lat, "longitude": lon, **extra}
        if live:
            location["live_period"] = live
        edited = {**message, "location": location, "edit_date": int(self.clock())}
        return self.push("edited_message", edited)

    def send_photo(self, chat_id: int, data: bytes, file_id: str = "photo-1") -> dict[str, Any]:
        self.files[file_id] = data
        size = {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "width": 1,
            "height": 1,
            "file_size": len(data),
        }
        return self.push("message", self._message(chat_id, photo=[size]))

    def replay(self, update: dict[str, Any]) -> None:
        """Deliver an update again, whatever the offset (Telegram resends what it thinks
        was not confirmed, e.g. after a lost response)."""
        self._replays.append(update)
        self._arrived.set()

    def fail_next(
        self,
        method: str,
        status: int,
        description: str,
        parameters: dict[str, Any] | None = None,
        times: int = 1,
        chat_id: int | None = None,
    ) -> None:
        self._failures.setdefault(method, []).extend(
            [Failure(status, description, parameters, chat_id)] * times
        )

    def _failure(self, method: str, params: dict[str, Any]) -> Failure | None:
        chat = params.get("chat_id")
        if chat in self.blocked and method.startswith(("send", "delete", "edit")):
            return Failure(403, "Forbidden: bot was blocked by the user")
        failures = self._failures.get(method, [])
        for n, failure in enumerate(failures):
            if failure.chat_id is None or failure.chat_id == chat:
                return failures.pop(n)
        return None

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        """The parameters of each successful call of ``method`` (failed ones: ``calls``)."""
        return [c.params for c in self.calls if c.method == method and c.status == 200]

    # --- the Bot API -----------------------------------------------------------------------

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.match_info["method"]
        form = await request.post()
        params = {k: _decode(v) if isinstance(v, str) else v for k, v in form.items()}
        call = Call(method, params)
        self.calls.append(call)
        failure = self._failure(method, params)
        handler = getattr(self, f"_api_{method}", None)
        if failure is not None:
            answer = self._error(failure.status, failure.description, failure.parameters)
        elif handler is None:
            answer = self._error(404, "Not Found: method not found")
        else:
            answer = await handler(params)
        call.status = answer.status
        if call.status == 200:
            for listener in self.listeners:
                listener(call)
        return answer

    def _ok(self, result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    def _error(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    async def _api_getMe(self, _params: dict[str, Any]) -> web.Response:
        return self._ok(
            {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "Weather",
                "username": "test_bot",
                "can_join_groups": False,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    async def _api_deleteWebhook(self, _params: dict[str, Any]) -> web.Response:
        self.webhook_url = ""
        return self._ok(True)

    async def _api_setWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook_url = str(params.get("url", ""))
        return self._ok(True)

    async def _api_getUpdates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook_url:
            return self._error(
                409, "Conflict: can't use getUpdates method while webhook is active"
            )
        offset = int(params.get("offset", 0) or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        timeout = float(params.get("timeout", 0) or 0)
        if not self._updates and not self._replays and timeout > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                pass
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        limit = int(params.get("limit", 100) or 100)
        replays, self._replays = self._replays, []
        return self._ok([*replays, *self._updates][:limit])

    def _bot_message(self, chat_id: Any, **body: Any) -> dict[str, Any]:
        number = next(self._message_ids)
        message = {
            "message_id": number,
            "date": self._dated(chat_id, number),
            "chat": {"id": int(chat_id), "type": "private"},
            "from": {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "Weather",
                "username": "test_bot",
            },
        }
        message.update(body)
        return message

    async def _api_sendMessage(self, params: dict[str, Any]) -> web.Response:
        text = str(params.get("text", ""))
        if not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            return self._error(400, "Bad Request: message is too long")
        body: dict[str, Any] = {"text": text}
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            for row in markup["inline_keyboard"]:
                for button in row:
                    if not 1 <= len(button.get("callback_data", "x").encode()) <= 64:
                        return self._error(400, "Bad Request: BUTTON_DATA_INVALID")
            body["reply_markup"] = markup
        return self._ok(self._bot_message(params["chat_id"], **body))

    async def _api_sendPhoto(self, params: dict[str, Any]) -> web.Response:
        return self._ok(self._bot_message(params["chat_id"], photo=[]))

    async def _api_sendDocument(self, params: dict[str, Any]) -> web.Response:
        return self._ok(
            self._bot_message(params["chat_id"], document={"file_id": "d", "file_unique_id": "d"})
        )

    async def _api_editMessageText(self, params: dict[str, Any]) -> web.Response:
        message = self._bot_message(
            params["chat_id"], text=params.get("text", ""), edit_date=int(time.time())
        )
        message["message_id"] = int(params["message_id"])
        return self._ok(message)

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> web.Response:
        message = self._bot_message(params["chat_id"], text="…", edit_date=int(time.time()))
        message["message_id"] = int(params["message_id"])
        return self._ok(message)

    async def _api_answerCallbackQuery(self, _params: dict[str, Any]) -> web.Response:
        return self._ok(True)

    def _too_old(self, chat_id: Any, ids: list[Any]) -> bool:
        """Whether one of the messages (those it knows of) is past Telegram's 48 hours."""
        now = self.clock()
        sent = [self._dates.get((int(chat_id), int(i))) for i in ids]
        return any(at is not None and now - at > DELETE_LIMIT_S for at in sent)

    async def _api_deleteMessage(self, params: dict[str, Any]) -> web.Response:
        if self._too_old(params["chat_id"], [params["message_id"]]):
            return self._error(400, TOO_OLD)
        return self._ok(True)

    async def _api_deleteMessages(self, params: dict[str, Any]) -> web.Response:
        if self._too_old(params["chat_id"], list(params["message_ids"])):
            return self._error(400, TOO_OLD)
        return self._ok(True)

    async def _api_getFile(self, params: dict[str, Any]) -> web.Response:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            return self._error(400, "Bad Request: invalid file_id")
        return self._ok(
            {
                "file_id": file_id,
                "file_unique_id": f"u-{file_id}",
                "file_size": len(self.files[file_id]),
                "file_path": f"photos/{file_id}.jpg",
            }
        )

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        name = request.match_info["path"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if name not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[name])
