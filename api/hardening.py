"""Security headers with a CSP on every response, and a cap on request bodies (R22)."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import TOO_LARGE, locale_from
from api.security_headers import HEADERS
from core.i18n import gettext

MAX_BODY = 256 * 1024  # the largest legitimate request is a key upload or a policy
DOCS = ("/api/v1/docs", "/api/v1/docs/oauth2-redirect")  # development only; loads its own assets


class TooLarge(HTTPException):
    """Raised while the body streams in; FastAPI passes HTTP errors through as they are."""

    def __init__(self) -> None:
        super().__init__(413)


class Hardening:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            await _too_large(scope, send)
            return
        seen, exceeded, replaced = 0, False, False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    exceeded = True
                    raise TooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal replaced
            if exceeded:  # whatever the app made of the error (middlewares may rewrap it)
                if not replaced:
                    replaced = True
                    await _too_large(scope, send)
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
        except TooLarge:
            if not replaced:
                await _too_large(scope, send)


async def _too_large(scope: Scope, send: Send) -> None:
    language = dict(scope["headers"]).get(b"accept-language", b"").decode("latin-1")
    detail = gettext(locale_from(language))(TOO_LARGE)
    body = json.dumps({"detail": detail}, ensure_ascii=False).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += HEADERS
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
