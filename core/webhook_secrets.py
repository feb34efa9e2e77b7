"""Signing desk webhooks' events, Stripe-style (SECURITY.md R5): ``t=<unix>,v1=<hex>`` over
``t.body``, one v1 per secret still signing; what a receiver checks (``verify``); and rotating
a webhook's secret, the replaced ones signing on for an overlap.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import Vault
from core.models import Webhook

TOLERANCE_S = 300  # receivers reject a timestamp further than this from their clock


def signature(secrets_: Sequence[bytes], raw: bytes, t: int) -> str:
    """``t=<unix>,v1=<hex>``; during a rotation one v1 per secret, the current one first."""
    signed = f"{t}.".encode() + raw
    macs = [hmac.new(s, signed, hashlib.sha256).hexdigest() for s in secrets_]
    return ",".join([f"t={t}", *(f"v1={m}" for m in macs)])


def verify(header: str, raw: bytes, secrets_: Iterable[bytes], *, now: float) -> bool:
    """What a receiver does (SECURITY.md R5): a fresh ``t`` and a v1 matching one secret.
    Rejecting a repeated ``Amparo-Event-Id`` is the receiver's own bookkeeping."""
    try:
        parts = [p.split("=", 1) for p in header.split(",")]
        ts = [v for k, v in parts if k == "t"]
        sigs = [v for k, v in parts if k == "v1"]
        t = int(ts[0]) if len(ts) == 1 else None
    except ValueError:
        return False
    if t is None or abs(now - t) > TOLERANCE_S:
        return False
    signed = f"{t}.".encode() + raw
    expected = [hmac.new(s, signed, hashlib.sha256).hexdigest() for s in secrets_]
    return any(hmac.compare_digest(e, s) for e in expected for s in sigs)


MAX_SECRETS = 3  # signing at once: the current one and the two it most recently replaced


def _older(vault: Vault, hook: Webhook) -> list[tuple[bytes, datetime]]:
    """The replaced secrets and when each stops signing, newest first. ``previous_secret_enc``
    holds them as a JSON list ``[[secret, until], ...]``; a row rotated before it could hold
    several has the one secret itself, until ``previous_until``."""
    raw = hook.get(vault, "previous_secret_enc")
    if raw is None:
        return []
    if not raw.startswith(b"["):  # a token_urlsafe secret never starts with "["
        return [] if hook.previous_until is None else [(raw, hook.previous_until)]
    return [(s.encode(), datetime.fromisoformat(u)) for s, u in json.loads(raw)]


async def rotate(
    session: AsyncSession, vault: Vault, *, hook: Webhook, now: datetime, overlap: timedelta
) -> str:
    """A new secret. The replaced one keeps signing until ``now + overlap``, and so does each
    older one still signing, if its own overlap ends sooner: a second rotation during an
    overlap does not cut off a receiver still on the first secret, while an overlap of 0
    ends every older secret at once (a leak). At most MAX_SECRETS sign: beyond, the oldest
    stops."""
    end = now + overlap
    current = hook.get(vault, "secret_enc")
    assert current is not None
    older = [(current, end), *((s, min(u, end)) for s, u in _older(vault, hook))]
    kept = [(s, u) for s, u in older if now < u][: MAX_SECRETS - 1]
    listed = [[s.decode(), u.isoformat()] for s, u in kept]
    hook.put(vault, "previous_secret_enc", json.dumps(listed).encode() if kept else None)
    hook.previous_until = max((u for _s, u in kept), default=None)
    secret = secrets.token_urlsafe(32)
    hook.put(vault, "secret_enc", secret)
    await session.flush()
    return secret


def signing_secrets(vault: Vault, hook: Webhook, now: datetime) -> list[bytes]:
    """The current secret first, then each replaced one whose overlap has not ended."""
    current = hook.get(vault, "secret_enc")
    assert current is not None
    return [current, *(s for s, until in _older(vault, hook) if now < until)]
