"""A signal-cli-rest-api (json-rpc mode) stand-in on 127.0.0.1, for the real signalbot 2.

Speaks what signalbot calls (LIBRARIES.md §2.2–2.3): ``/v1/health`` (204), ``/v1/about``,
``/v1/groups/{number}``, the ``/v1/receive/{number}`` websocket (one JSON frame per envelope,
kept open: a clean close would stop signalbot for good), ``/v2/send`` answering 201 with a
*list*, contacts, typing, reactions, receipts, remote delete and attachments.

Tests push envelopes as people would (``send_text``, ``send_group_text``, ``send_untrusted``
from a changed key), read what the bot sent from ``sent``, inject failures with ``fail_next``
(or Signal's rate limit, as the real API answers it, with ``rate_limit_next``) and drop sockets
with ``close_sockets``.
As the real service in json-rpc mode (signal-cli takes each message off Signal's servers at
once; signal-cli-rest-api hands it only to the websockets open at that moment, upstream issues
#537, #834), a message pushed while no websocket is open is dropped (kept in ``dropped``),
unless a test opts in to ``queue_while_away``.
Each chat's disappearing-messages timer (``PUT /v1/contacts``) is kept in ``timers`` and, as a
phone would, stamped on what that person sends next (``expiresInSeconds``).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

NUMBER = "+4915112345678"
GROUP_INTERNAL_ID = "Mg8LQTdaZJs8+LJCrtQgblqHx+xI2dX9JJ8hVA2kqt8="
GROUP_ID = "group." + base64.b64encode(GROUP_INTERNAL_ID.encode()).decode()


@dataclass
class Failure:
    status: int
    body: dict[str, Any]
    recipient: str | None = None  # only a request for this recipient fails


@dataclass
class SignalStandIn:
    number: str = NUMBER
    sent: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # (verb, path, body)
    attachments: dict[str, bytes] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)  # attachment ids deleted from the store
    groups: list[dict[str, Any]] = field(default_factory=list)
    timers: dict[str, int] = field(default_factory=dict)  # recipient -> expiration seconds
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # pushed with nobody listening
    queue_while_away: bool = False  # opt-in: keep those for the next socket instead (not real)
    _backlog: list[str] = field(default_factory=list)  # frames for when no socket is open
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _clock: itertools.count[int] = field(
        default_factory=lambda: itertools.count(int(time.time() * 1000))
    )
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        r = app.router
        r.add_get("/v1/health", self._health)
        r.add_get("/v1/about", self._about)
        r.add_get("/v1/groups/{number}", self._groups)
        r.add_put("/v1/groups/{number}/{gid:.+}", self._record_204)
        r.add_get("/v1/receive/{number}", self._receive)
        r.add_post("/v2/send", self._send)
        r.add_put("/v1/contacts/{number}", self._contact)
        r.add_put("/v1/typing-indicator/{number}", self._record_204)
        r.add_delete("/v1/typing-indicator/{number}", self._record_204)
        r.add_post("/v1/reactions/{number}", self._record_204)
        r.add_post("/v1/receipts/{number}", self._record_204)
        r.add_delete("/v1/remote-delete/{number}", self._remote_delete)
        r.add_get("/v1/attachments/{id}", self._attachment)
        r.add_delete("/v1/attachments/{id}", self._delete_attachment)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def service(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- what people do ----------------------------------------------------------------------

    def envelope(
        self, source_uuid: str, data_message: dict[str, Any], source_number: str | None = None
    ) -> dict[str, Any]:
        ts = next(self._clock)
        data_message.setdefault("timestamp", ts)
        data_message.setdefault("expiresInSeconds", self.timers.get(source_uuid, 0))
        data_message.setdefault("viewOnce", False)
        return {
            "account": self.number,
            "envelope": {
                "source": source_uuid,
                "sourceNumber": source_number,
                "sourceUuid": source_uuid,
                "sourceName": "Defender",
                "sourceDevice": 1,
                "timestamp": data_message["timestamp"],
                "serverReceivedTimestamp": ts + 5,
                "serverDeliveredTimestamp": ts + 10,
                "dataMessage": data_message,
            },
        }

    async def push(self, frame: dict[str, Any]) -> None:
        text = json.dumps(frame)
        open_sockets = [ws for ws in self.sockets if not ws.closed]
        if not open_sockets:
            if self.queue_while_away:
                self._backlog.append(text)
            else:
                self.dropped.append(frame)  # lost, as with signal-cli-rest-api's json-rpc mode
            return
        await open_sockets[-1].send_str(text)

    async def send_text(self, source_uuid: str, text: str, **extra: Any) -> dict[str, Any]:
        frame = self.envelope(source_uuid, {"message": text, **extra})
        await self.push(frame)
        return frame

    async def send_attachment(
        self, source_uuid: str, data: bytes, content_type: str, text: str | None = None
    ) -> dict[str, Any]:
        attachment_id = f"att{next(self._clock)}"
        self.attachments[attachment_id] = data
        meta = {
            "id": attachment_id,
            "contentType": content_type,
            "filename": None,
            "size": len(data),
            "isVoiceNote": False,
        }
        return await self.send_text(source_uuid, text or "", attachments=[meta])

    async def send_untrusted(self, source_uuid: str, timestamp: int | None = None) -> None:
        """A message signal-cli could not decrypt: the sender's safety number changed and it
        trusts keys on first use only. signal-cli's JsonReceiveMessageHandler writes the
        exception next to an envelope that names the sender and carries no message. Once the
        new key is trusted it retries the message from its cache: an ordinary ``send_text``
        with the same timestamp."""
        frame = self.envelope(source_uuid, {} if timestamp is None else {"timestamp": timestamp})
        del frame["envelope"]["dataMessage"]
        frame["exception"] = {
            "message": f"Untrusted identity: {source_uuid}",
            "type": "UntrustedIdentityException",
        }
        await self.push(frame)

    async def send_group_text(self, source_uuid: str, text: str) -> dict[str, Any]:
        group = {
            "groupId": GROUP_INTERNAL_ID,
            "groupName": "Desk",
            "revision": 1,
            "type": "DELIVER",
        }
        return await self.send_text(source_uuid, text, groupInfo=group)

    def add_group(self, members: list[str]) -> None:
        self.groups.append(
            {
                "id": GROUP_ID,
                "internal_id": GROUP_INTERNAL_ID,
                "name": "Desk",
                "description": "",
                "members": members,
                "blocked": False,
                "member": True,
                "pending_invites": [],
                "pending_requests": [],
                "invite_link": "",
                "admins": [],
                "permissions": {
                    "add_members": "only-admins",
                    "edit_group": "only-admins",
                    "send_messages": "every-member",
                },
            }
        )

    def fail_next(
        self, path: str, status: int, error: str, times: int = 1, recipient: str | None = None
    ) -> None:
        failure = Failure(status, {"error": error}, recipient)
        self._failures.setdefault(path, []).extend([failure] * times)

    def rate_limit_next(self, times: int = 1, recipient: str | None = None) -> None:
        """Signal rate-limits the account (a plain rate limit or a proof-of-work challenge):
        signal-cli's json-rpc error -5, which signal-cli-rest-api answers with a 429 carrying
        the challenge tokens and no wait (api.go ``SendV2``, client/jsonrpc2.go)."""
        error = (
            "Failed to send message due to rate limiting. Use the attached challenge tokens"
            " to lift the rate limit restrictions via the"
            " '/v1/accounts/{number}/rate-limit-challenge' endpoint."
        )
        body = {"error": error, "challenge_tokens": ["a1b2c3d4-challenge"], "account": self.number}
        self._failures.setdefault("/v2/send", []).extend([Failure(429, body, recipient)] * times)

    def messages_to(self, recipient: str) -> list[str]:
        """What the bot sent this person, in order."""
        return [str(m.get("message", "")) for m in self.sent if recipient in m["recipients"]]

    def timers_set(self, recipient: str) -> list[int]:
        """Every disappearing-messages timer the bot set on this chat, in order."""
        return [
            int(b["expiration_in_seconds"])
            for verb, path, b in self.requests
            if path.startswith("/v1/contacts/") and b and b.get("recipient") == recipient
        ]

    async def close_sockets(self, code: int = WSCloseCode.INTERNAL_ERROR) -> None:
        self.connected.clear()
        for ws in list(self.sockets):
            await ws.close(code=code)

    # --- the REST API ------------------------------------------------------------------------

    def _failure(self, path: str, body: Any = None) -> web.Response | None:
        body = body if isinstance(body, dict) else {}
        to = {str(r) for r in [*body.get("recipients", []), body.get("recipient")] if r}
        failures = self._failures.get(path, [])
        for n, failure in enumerate(failures):
            if failure.recipient is None or failure.recipient in to:
                failures.pop(n)
                return web.json_response(failure.body, status=failure.status)
        return None

    async def _health(self, _request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _about(self, request: web.Request) -> web.Response:
        return self._failure(request.path) or web.json_response(
            {
                "versions": ["v1", "v2"],
                "build": 2,
                "mode": "json-rpc",
                "version": "0.101.0",
                "capabilities": {"v2/send": ["quotes", "mentions"]},
            }
        )

    async def _groups(self, request: web.Request) -> web.Response:
        return self._failure(request.path) or web.json_response(self.groups)

    async def _record_204(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        return self._failure(request.path, body) or web.Response(status=204)

    async def _contact(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.method, request.path, body))
        failure = self._failure(request.path, body)
        if failure is not None:
            return failure
        if body.get("expiration_in_seconds") is not None:
            self.timers[body["recipient"]] = int(body["expiration_in_seconds"])
        return web.Response(status=204)

    async def _receive(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.sockets.append(ws)
        self.connected.set()
        backlog, self._backlog = self._backlog, []
        for text in backlog:
            await ws.send_str(text)
        async for _ in ws:  # the client never sends; this keeps the socket open
            pass
        if ws in self.sockets:
            self.sockets.remove(ws)
        if not any(not other.closed for other in self.sockets):
            self.connected.clear()
        return ws

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("POST", "/v2/send", body))
        failure = self._failure("/v2/send", body)
        if failure is not None:
            return failure
        self.sent.append(body)
        return web.json_response([{"timestamp": str(next(self._clock))}], status=201)

    async def _remote_delete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("DELETE", request.path, body))
        return web.json_response({"timestamp": str(next(self._clock))})

    async def _delete_attachment(self, request: web.Request) -> web.Response:
        self.requests.append(("DELETE", request.path, None))
        failure = self._failure(request.path)
        if failure is None:
            self.deleted.append(request.match_info["id"])
        return failure or web.Response(status=204)

    async def _attachment(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, None))
        data = self.attachments.get(request.match_info["id"])
        if data is None:
            return web.json_response({"error": "attachment not found"}, status=404)
        return web.Response(body=data)
