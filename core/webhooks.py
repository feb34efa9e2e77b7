"""External desk webhooks: endpoints, delivering an event, dead letters, resume and replay.

Each event is an outbox row (channel "webhook") holding the exact body, encrypted; the
dispatcher signs it at send time with ``t`` = now, so a retry carries a fresh timestamp and
the same ``Amparo-Event-Id``. Anything but a 2xx answer is retried with backoff; after the
last attempt the row is dead, listed for the desk and replayable. What an event says and its
outbox items are in ``core.webhook_events``; signatures and secrets in ``core.webhook_secrets``.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
import uuid
from collections.abc import Iterable
from datetime import datetime

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import destinations, wakeup
from core.crypto import Vault
from core.messages import DeliveryError
from core.models import OutboxMessage, OutboxState, Webhook
from core.webhook_secrets import signature, signing_secrets


def check_url(url: str) -> None:
    """ValueError unless ``url`` can name a webhook receiver."""
    if not url.startswith(("https://", "http://")):
        raise ValueError("a webhook URL starts with https:// (or http:// for local tests)")


async def add(
    session: AsyncSession, vault: Vault, *, org_id: uuid.UUID, url: str
) -> tuple[Webhook, str]:
    """A new webhook and its secret (shown once)."""
    check_url(url)
    secret = secrets.token_urlsafe(32)
    hook = Webhook(id=uuid.uuid4(), org_id=org_id, url=url)
    hook.put(vault, "secret_enc", secret)
    session.add(hook)
    return hook, secret


async def endpoints(session: AsyncSession, org_id: uuid.UUID) -> list[uuid.UUID]:
    """Every endpoint of the organisation, paused ones too: a paused endpoint's events are
    queued and held (core.dispatch), so the desk gets what happened during its maintenance."""
    stmt = select(Webhook.id).where(Webhook.org_id == org_id)
    return [hook_id for (hook_id,) in await session.execute(stmt.order_by(Webhook.id))]


def client(
    timeout_s: float = 15.0, *, public_only: bool = False, exempt: frozenset[str] = frozenset()
) -> aiohttp.ClientSession:
    """The HTTP client for desk webhooks and the heartbeat (open it in the running loop);
    ``public_only``: names resolve to public addresses only, but ``exempt`` hosts
    (``core.destinations``).

    aiohttp, not httpx: at the dispatcher's concurrency httpx's pool spent 2.7 ms of CPU per
    webhook against aiohttp's 0.3 ms. Each request names its proxy (``core.proxies``).
    """
    connector = destinations.PublicConnector(exempt) if public_only else aiohttp.TCPConnector()
    # Answers are never inflated: a small gzip answer could fill the engine's memory.
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        auto_decompress=False,
        headers={"Accept-Encoding": "identity"},
    )


ANSWER_KEPT = 64 * 1024  # of a receiver's answer, read (and dropped) to reuse the connection


async def drain(answer: aiohttp.ClientResponse) -> None:
    """Read and drop an answer's body so its connection can serve the next request; one
    larger than ANSWER_KEPT is cut off (the connection closed), never read into memory."""
    left = ANSWER_KEPT
    while left > 0:
        chunk = await answer.content.read(min(left, 16 * 1024))
        if not chunk:
            return
        left -= len(chunk)
    answer.close()


async def post(
    client: aiohttp.ClientSession,
    vault: Vault,
    hook: Webhook,
    row: OutboxMessage,
    now: datetime,
    proxy: str | None = None,
) -> None:
    """Deliver one event; raises DeliveryError (transient: webhooks retry until a 2xx).

    A redirect is not followed: it is an answer other than 2xx (the desk fixes its URL). A
    public-only client refuses a private destination before sending (``core.destinations``):
    a name through a proxy, an IP literal.
    """
    connector = client.connector
    if isinstance(connector, destinations.PublicConnector):
        try:
            host = urllib.parse.urlsplit(hook.url).hostname or ""
            await connector.guard.admit(host, proxied=proxy is not None)
        except (OSError, UnicodeError):
            # as the resolver's refusal: nothing tells a private address from no address
            raise DeliveryError("webhook not a public address") from None
    raw = row.get(vault, "payload_enc")
    if raw is None:
        raise DeliveryError("no payload", permanent=True)
    event_id = json.loads(raw)["event_id"]
    headers = {
        "Content-Type": "application/json",
        "Amparo-Event-Id": event_id,
        "Amparo-Signature": signature(
            signing_secrets(vault, hook, now), raw, int(now.timestamp())
        ),
    }
    try:
        async with client.post(
            hook.url, data=raw, headers=headers, allow_redirects=False, proxy=proxy
        ) as answer:
            status, retry_after = answer.status, answer.headers.get("Retry-After", "")
            await drain(answer)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryError(f"webhook {type(exc).__name__}") from None
    if not 200 <= status < 300:
        wait = float(retry_after) if retry_after.isdigit() else None
        raise DeliveryError(f"webhook HTTP {status}", retry_after=wait)


async def dead_letters(session: AsyncSession, *, org_id: uuid.UUID) -> list[OutboxMessage]:
    """Webhook events that were given up on, oldest first, for the desk to see."""
    stmt = (
        select(OutboxMessage)
        .join(Webhook, Webhook.id == OutboxMessage.webhook_id)
        .where(Webhook.org_id == org_id, OutboxMessage.state == OutboxState.dead)
        .order_by(OutboxMessage.created_at)
    )
    return list((await session.execute(stmt)).scalars())


async def resume(session: AsyncSession, hook: Webhook, now: datetime) -> None:
    """Deliveries to a paused endpoint were held (core.dispatch: not given up); resuming sends
    them now rather than at their next hourly look. One being claimed now is not waiting: its
    dispatcher, recording it held, sees the endpoint resumed (``core.delivery``), so the
    endpoint is marked first (on PostgreSQL its row lock orders this with that reading)."""
    hook.active = True
    await session.flush()
    stmt = (
        update(OutboxMessage)
        .where(OutboxMessage.webhook_id == hook.id, OutboxMessage.state == OutboxState.pending)
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(stmt)
    wakeup.touch(session, wakeup.OUTBOX)


async def replay(
    session: AsyncSession, *, org_id: uuid.UUID, ids: Iterable[uuid.UUID], now: datetime
) -> int:
    """Queue dead events of this organisation again (another organisation's ids: ignored).
    Each counts as queued now: replayed while its endpoint is still paused, it is held for
    the resume as a new event is (dispatch.PAUSED_HOLD), not given up again at once."""
    mine = select(Webhook.id).where(Webhook.org_id == org_id)
    stmt = (
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(list(ids)),
            OutboxMessage.state == OutboxState.dead,
            OutboxMessage.webhook_id.in_(mine),
        )
        .values(
            state=OutboxState.pending,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    count = int(result.rowcount)  # type: ignore[attr-defined]
    if count:
        wakeup.touch(session, wakeup.OUTBOX)
    return count
