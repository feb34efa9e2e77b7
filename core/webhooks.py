"""External desk webhooks: the DESIGN.md body, Stripe-style signatures, dead letters, replay.

Each event is an outbox row (channel "webhook") holding the exact body, encrypted; the
dispatcher signs it at send time with ``t`` = now, so a retry carries a fresh timestamp and
the same ``Amparo-Event-Id``. Anything but a 2xx answer is retried with backoff; after the
last attempt the row is dead, listed for the desk and replayable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import urllib.parse
import uuid
from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import destinations, wakeup
from core.claims import locked
from core.crypto import Vault
from core.messages import DeliveryError
from core.models import Alert, OutboxMessage, OutboxState, Priority, Report, Webhook
from core.outbox import Item

EVENTS = (
    "alert.triggered",
    "alert.escalated",
    "alert.acknowledged",
    "alert.resolved",
    "report.filed",
    "rollcall.closed",
)
TOLERANCE_S = 300  # receivers reject a timestamp further than this from their clock
# A filed report is the defender's word to the desk, like a reply; an urgent one also raises
# an alert, whose own events go at that alert's priority.
REPORT_PRIORITY = Priority.P1


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def body(event_type: str, alert: Alert, *, handle: str, event_id: str) -> bytes:
    """The raw JSON body; no plaintext report content, the location only sealed."""
    if event_type not in EVENTS:
        raise ValueError(f"unknown webhook event {event_type}")
    sealed = alert.location_sealed
    data = {
        "event_id": event_id,
        "type": event_type,
        "dedup_key": alert.dedup_key,
        "org": str(alert.org_id),
        "alert": {
            "id": str(alert.id),
            "kind": str(alert.kind),
            "priority": f"P{alert.priority}",
            "state": str(alert.state),
            "step": alert.step,
            "defender": handle,
            "do_not_contact": alert.do_not_contact,
            "triggered_at": iso(alert.triggered_at),
            "acknowledged_at": iso(alert.acknowledged_at),
            "resolved_at": iso(alert.resolved_at),
            "outcome": alert.outcome,
            "location_sealed": None if sealed is None else base64.b64encode(sealed).decode(),
        },
    }
    return _dump(data)


def report_body(report: Report, *, handle: str, event_id: str) -> bytes:
    """The ``report.filed`` body: which report, when, by whom; ``alert`` is null. Nothing the
    defender wrote or chose: the narrative and the type of act are sealed in the report (the
    type of act also in the encrypted triage), for the desk to open with its own key."""
    data = {
        "event_id": event_id,
        "type": "report.filed",
        "dedup_key": f"report:{report.id}",
        "org": str(report.org_id),
        "alert": None,
        "report": {
            "id": str(report.id),
            "defender": handle,
            "filed_at": iso(report.created_at),
        },
    }
    return _dump(data)


def _dump(data: Mapping[str, object]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


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


async def endpoints(session: AsyncSession, org_id: uuid.UUID) -> list[uuid.UUID]:
    """Every endpoint of the organisation, paused ones too: a paused endpoint's events are
    queued and held (core.dispatch), so the desk gets what happened during its maintenance."""
    stmt = select(Webhook.id).where(Webhook.org_id == org_id)
    return [hook_id for (hook_id,) in await session.execute(stmt.order_by(Webhook.id))]


TRIGGERED = "alert.triggered"


async def introduced(
    session: AsyncSession, alert_ids: Collection[uuid.UUID]
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """The (alert, endpoint) pairs an ``alert.triggered`` was queued for, in one query: an
    open alert's outbox rows are all kept (core.retention)."""
    if not alert_ids:
        return set()
    stmt = select(OutboxMessage.alert_id, OutboxMessage.webhook_id).where(
        OutboxMessage.alert_id.in_(list(alert_ids)),
        OutboxMessage.webhook_id.is_not(None),
        OutboxMessage.idempotency_key.like(f"%:{TRIGGERED}|webhook:%"),
    )
    return {(a, h) for a, h in await session.execute(stmt) if a is not None and h is not None}


def event_items(
    alert: Alert,
    hooks: Iterable[uuid.UUID],
    *,
    handle: str,
    event_type: str,
    stem: str,
    known: Container[uuid.UUID] | None = None,
) -> list[Item]:
    """Outbox items for ``event_type`` to each of the organisation's ``hooks``.

    An external desk learns of an alert with ``alert.triggered`` first. ``known``: the
    endpoints that were told (``introduced``; None: all of them). Another one, added since,
    gets ``alert.triggered`` in place of a later event (the body says where the alert
    stands), and nothing of the end of an alert it never heard of."""
    items = []
    for hook_id in hooks:
        kind = event_type
        if known is not None and hook_id not in known:
            if event_type == "alert.resolved":
                continue
            kind = TRIGGERED
        raw = body(kind, alert, handle=handle, event_id=uuid.uuid4().hex)
        key = f"{stem}:{kind}|webhook:{hook_id.hex}"
        item = Item("webhook", alert.priority, key, raw=raw, webhook_id=hook_id)
        items.append(replace(item, alert_id=alert.id, recipient="webhook"))
    return items


def report_items(report: Report, hooks: Iterable[uuid.UUID], *, handle: str) -> list[Item]:
    """Outbox items for ``report.filed`` to each of the organisation's ``hooks``; the key
    names the report, so filing it again queues nothing twice."""
    items = []
    for hook_id in hooks:
        raw = report_body(report, handle=handle, event_id=uuid.uuid4().hex)
        key = f"r:{report.id.hex}:report.filed|webhook:{hook_id.hex}"
        items.append(
            Item("webhook", REPORT_PRIORITY, key, raw=raw, webhook_id=hook_id, recipient="webhook")
        )
    return items


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


HELD = (OutboxState.pending, OutboxState.sending, OutboxState.failed, OutboxState.dead)


async def forget_location(session: AsyncSession, vault: Vault, alert_id: uuid.UUID) -> int:
    """Take the sealed location out of the alert's events still held (waiting, being sent, or
    given up and replayable for 30 days), as the alert itself forgets it when it ends (R25,
    ``core.retention``); a replay then sends the event without it. Returns the rows changed.

    Rows locked on PostgreSQL, skipping one locked now: a dispatcher recording it may be
    waiting for the alert this transaction holds (``core.withdrawals.withdraw_steps``); on SQLite
    the caller holds the write lock."""
    stmt = select(OutboxMessage).where(
        OutboxMessage.alert_id == alert_id,
        OutboxMessage.webhook_id.is_not(None),
        OutboxMessage.state.in_(HELD),
        OutboxMessage.payload_enc.is_not(None),
    )
    changed = 0
    for row in (await session.execute(locked(stmt, session, skip=True))).scalars():
        raw = row.get(vault, "payload_enc")
        data = {} if raw is None else json.loads(raw)
        event = data.get("alert")  # None in a report's event
        if event is not None and event.get("location_sealed") is not None:
            event["location_sealed"] = None
            row.put(vault, "payload_enc", _dump(data))
            changed += 1
    return changed


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
