"""Security headers with a CSP on every response, a cap on request bodies (R22), and no NUL
character in a request's path, query or typed fields (PostgreSQL refuses it in text: each
route would otherwise answer it with a 500 of its own, SQLite stores it). Telegram's updates are
the exception: a defender's message holding a NUL is answered by the flows, which ask for it to
be typed again (as when polling); a 400 would only make Telegram resend it, then drop it."""

from __future__ import annotations

import json

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import HAS_NUL, TOO_LARGE, failed, for_people, locale_from
from api.security_headers import HEADERS
from core.i18n import gettext

MAX_BODY = 256 * 1024  # the largest legitimate request is a key upload or a policy
DOCS = ("/api/v1/docs", "/api/v1/docs/oauth2-redirect")  # development only; loads its own assets
NUL_ANSWERED = ("/hooks/telegram",)  # bodies whose NUL the flows answer (amparo.inbound)


# A NUL as typed in a form (%00) or in JSON (\u0000); raw in either. Not file uploads.
_FORM, _JSON = b"application/x-www-form-urlencoded", b"application/json"


class Refused(HTTPException):
    """Raised while the body streams in; FastAPI passes HTTP errors through as they are."""

    def __init__(self, status: int = 413) -> None:
        super().__init__(status)


def _has_nul(data: bytes, kind: bytes) -> bool:
    """A NUL in a body of ``kind``: in JSON a ``\\u0000`` whose backslash is not escaped."""
    if b"\x00" in data or (kind == _FORM and b"%00" in data):
        return True
    if kind != _JSON:
        return False
    at = data.find(b"\\u0000")
    while at >= 0:
        run = len(data[:at]) - len(data[:at].rstrip(b"\\"))
        if run % 2 == 0:  # this backslash is not itself escaped
            return True
        at = data.find(b"\\u0000", at + 1)
    return False


class Hardening:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            await _refuse(scope, send, 413)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _refuse(scope, send, 400)
            return
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        typed = kind in (_FORM, _JSON) and scope["path"] not in NUL_ANSWERED
        seen, refused, replaced, tail = 0, 0, False, b""

        async def limited_receive() -> Message:
            nonlocal seen, refused, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > self.max_body:
                    refused = 413
                    raise Refused(413)
                if typed and _has_nul(tail + chunk, kind):
                    refused = 400
                    raise Refused(400)
                tail = (tail + chunk)[-64:]  # a %00 or \u0000 split between two chunks
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal replaced
            if refused:  # whatever the app made of the error (middlewares may rewrap it)
                if not replaced:
                    replaced = True
                    await _refuse(scope, send, refused)
                return
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _v in message.get("headers", [])}
                if scope["path"] in DOCS:  # Swagger UI runs inline scripts: no CSP there
                    present.add(b"content-security-policy")
                extra = [(k, v) for k, v in HEADERS if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Refused as exc:
            if not replaced:
                await _refuse(scope, send, exc.status_code)


async def _refuse(scope: Scope, send: Send, status: int) -> None:
    message = TOO_LARGE if status == 413 else HAS_NUL
    request = Request(scope)
    if "app" in scope and for_people(request):  # a responder's form: the dashboard's page
        page = failed(request, status, message)
        await _send(send, status, page.body, page.raw_headers)
        return
    language = dict(scope["headers"]).get(b"accept-language", b"").decode("latin-1")
    detail = gettext(locale_from(language))(message)
    body = json.dumps({"detail": detail}, ensure_ascii=False).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await _send(send, status, body, headers)


async def _send(
    send: Send, status: int, body: bytes | memoryview, headers: list[tuple[bytes, bytes]]
) -> None:
    """The answer itself, past the app and its middlewares: with the headers every answer has."""
    present = {name for name, _value in headers}
    headers = [*headers, *((k, v) for k, v in HEADERS if k not in present)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": bytes(body)})
