"""The device cookie (core.device_cookies) on the wire: set at each login, read at the next.
Set like the session cookie: ``__Host-``, Secure, HttpOnly, SameSite=Strict, Path=/. It
outlives logout on purpose: it names the browser, not a session."""

from __future__ import annotations

from datetime import datetime

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import device_cookies
from core.crypto import Vault
from core.models import Responder

DEVICE_COOKIE = "__Host-amparo_device"


def remember_device(response: Response, vault: Vault, responder: Responder, now: datetime) -> None:
    """Give this browser a fresh device cookie: only once password and code were right."""
    response.set_cookie(
        DEVICE_COOKIE,
        device_cookies.issue(vault, responder, now),
        max_age=int(device_cookies.LIFETIME.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


async def presented_device(
    request: Request,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    username: str,
    now: datetime,
) -> str | None:
    """The key of the device cookie this client holds for ``username``'s account, or None."""
    value = request.cookies.get(DEVICE_COOKIE)
    if not value:
        return None
    async with sessions() as session:
        return await device_cookies.device_for(session, vault, value, username, now)
