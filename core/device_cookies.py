"""Device cookies (OWASP, "Slow Down Online Guessing Attacks with Device Cookies").

After a login with password and TOTP, the browser gets a cookie naming that responder, MACed
by the server. A later attempt at the same account that presents it comes from a device
known to have logged in: it is spared the per-address and per-account limits that guessers
elsewhere can trip for somebody else (the backstop would otherwise let ~20 addresses lock a
responder out during an emergency), and counts against a limit of its own instead (and
still against the account from its own address: core.throttle.Limits.login_from_device).
It changes only throttling: the password and the code are checked all the same.

The value is ``v1.<responder id>.<expiry>.<nonce>.<mac>``. The MAC is the vault's keyed
HMAC-SHA256 (``exact_index``, its own domain) and also covers the responder's password hash,
which stays out of the cookie: a password change voids every device cookie of the account.
A malformed, altered, expired or disabled responder's cookie, or one for another account, is
no cookie at all.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import Vault
from core.models import Responder

LIFETIME = timedelta(days=30)  # each login issues a fresh one, so only 30 idle days end it
_KIND = "device_cookie"
_VERSION = "v1"


def _mac(vault: Vault, responder: Responder, expires: int, nonce: str) -> str:
    message = f"{_VERSION}|{responder.id.hex}|{expires}|{nonce}|{responder.password_hash}"
    return base64.urlsafe_b64encode(vault.exact_index(_KIND, message)).rstrip(b"=").decode()


def issue(vault: Vault, responder: Responder, now: datetime) -> str:
    """A new device cookie for ``responder``, who has just proved password and code."""
    expires = int((now + LIFETIME).timestamp())
    nonce = secrets.token_hex(16)  # hex: the throttle's keyer case-folds its keys
    mac = _mac(vault, responder, expires, nonce)
    return ".".join((_VERSION, responder.id.hex, str(expires), nonce, mac))


async def device_for(
    session: AsyncSession, vault: Vault, value: str, username: str, now: datetime
) -> str | None:
    """The device's key (its cookie's nonce) when ``value`` is a live device cookie of the
    account named ``username``, else None. The account is read by the id the cookie names,
    so the work done does not depend on the username tried."""
    parts = value.split(".")
    if len(parts) != 5 or parts[0] != _VERSION:
        return None
    _v, hex_id, expires, nonce, mac = parts
    try:
        responder_id, expiry = uuid.UUID(hex=hex_id), int(expires)
    except ValueError:
        return None
    # One spelling only: uuid and int read several, the MAC covers the canonical one.
    if (hex_id, expires) != (responder_id.hex, str(expiry)) or len(nonce) != 32:
        return None
    if now.timestamp() >= expiry:
        return None
    responder = await session.get(Responder, responder_id)
    if responder is None or not responder.active:
        return None
    expected = _mac(vault, responder, expiry, nonce)
    if not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "surrogatepass")):
        return None
    return nonce if responder.username == username else None
