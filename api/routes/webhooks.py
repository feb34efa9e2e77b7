"""Outbound webhooks to an external desk: endpoints, secret rotation, delivery log, replay."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import delete, select

from api import errors
from api.deps import AdminDep, NowDep, SessionDep, VaultDep
from api.errors import N_, ApiError
from core import audit, destinations, webhook_events, webhook_secrets, webhooks
from core.auth import Principal
from core.config import Mode
from core.models import OutboxMessage, OutboxState, Webhook

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

BAD_URL = N_("a webhook URL starts with https://")
PRIVATE_URL = N_("a webhook URL must name a public address, not a private or local one")
NOT_DEAD = N_("only a delivery that was given up on can be replayed")

RECEIVER = """
Every event is a POST with a JSON body (`event_id`, `type`, `dedup_key`, `org`, `alert`; a
`report.filed` event also has `report`, a `rollcall.closed` event `rollcall`, below). The
`type` is one of `alert.triggered`, `alert.escalated` (the alert went to its next desk step,
or triggered again when its acknowledgement timed out), `alert.acknowledged`,
`alert.resolved`, `report.filed` and `rollcall.closed`. The headers are `Amparo-Event-Id` and
`Amparo-Signature: t=<unix>,v1=<hex>[,v1=<hex>]`, where each v1 is HMAC-SHA256(secret,
"<t>.<raw body>"). During a secret rotation the old secrets sign too (up to three v1 in all),
so accept any v1 that matches. Reject a `t` more than 300 s from your clock and an event id
seen before, taking the id from the signed body (the `Amparo-Event-Id` header is not signed: a
replayed request could carry another):

```python
import hashlib, hmac, json, time

SEEN: set[str] = set()  # keep these for at least the retry window, e.g. in your database

def accept(raw_body: bytes, headers: dict[str, str], secret: bytes) -> bool:
    items = [p.split("=", 1) for p in headers["Amparo-Signature"].split(",")]
    t = int(next(v for k, v in items if k == "t"))
    if abs(time.time() - t) > 300:
        return False
    mac = hmac.new(secret, f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest()
    if not any(k == "v1" and hmac.compare_digest(mac, v) for k, v in items):
        return False
    event_id = json.loads(raw_body)["event_id"]  # signed, unlike the header
    if event_id in SEEN:
        return False  # a retry of an event already handled: answer 2xx, do nothing
    SEEN.add(event_id)
    return True
```

Answer 2xx once the event is stored; anything else is retried with backoff for about 3 to 6
hours, then given up (listed among the endpoint's deliveries, where an admin can replay it).
An endpoint learns of an alert with `alert.triggered`; if that event was given up, the next
event about the alert comes as `alert.triggered` in its place (its body says where the alert
stands). Every alert event carries the whole alert (key it by `alert.id`). Acknowledge or
resolve back with an API token: `POST /api/v1/alerts/by-dedup/{dedup_key}/acknowledge`.
An alert event's `dedup_key` names one alert: the defender's next alert of the same kind has
its own, and a reopened alert gets a new one, which its next events carry (`alert.id` stays the
same). So a late retry about an earlier alert, or about this one before it was reopened,
answers 409 and closes nothing: act with the `dedup_key` of the latest event about the alert.

A `report.filed` event tells of an incident report a defender filed: its `alert` is null, its
`dedup_key` is `report:<report id>` (not an alert's: there is nothing to acknowledge), and its
`report` holds `id`, `defender` (the handle) and `filed_at`. It carries nothing the defender
wrote or chose: open the report in the dashboard or with `amparo reports open`. Events about
alerts have no `report`.

A `rollcall.closed` event tells that a roll-call closed: its `alert` is null, its `dedup_key`
is `rollcall:<roll-call id>`, and its `rollcall` holds `id`, `created_at`, `closes_at`,
`closed_at` and the counts `recipients`, `safe`, `help` and `unanswered` (no text, no
handles: `GET /api/v1/rollcalls/{id}` has the answers).
"""


class WebhookIn(BaseModel):
    url: str = Field(min_length=8, max_length=500)


class WebhookPatch(BaseModel):
    """What to change; a field left out stays as it is."""

    active: bool | None = None
    url: Annotated[str | None, Field(min_length=8, max_length=500)] = None


class RotateIn(BaseModel):
    overlap_hours: Annotated[int, Field(ge=0, le=168)] = 24


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    active: bool
    created_at: datetime
    previous_secret_until: datetime | None


class NewSecret(WebhookOut):
    secret: str  # shown once


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event: str | None
    alert_id: uuid.UUID | None
    state: OutboxState
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str | None


def out(h: Webhook) -> WebhookOut:
    return WebhookOut(
        id=h.id,
        url=h.url,
        active=h.active,
        created_at=h.created_at,
        previous_secret_until=h.previous_until,
    )


def event_of(key: str) -> str | None:
    """The event type, from the idempotency key ``<stem>:<type>|webhook:<id>``."""
    head, sep, _hook = key.rpartition("|webhook:")
    event = head.rpartition(":")[2]
    return event if sep and event in webhook_events.EVENTS else None


async def _hook(session: SessionDep, principal: Principal, hook_id: uuid.UUID) -> Webhook:
    hook = await session.get(Webhook, hook_id)
    if hook is None or hook.org_id != principal.org_id:
        raise ApiError(404, errors.NOT_FOUND)
    return hook


async def _audit(
    session: SessionDep, vault: VaultDep, p: Principal, action: str, target: uuid.UUID, now: NowDep
) -> None:
    await audit.record(
        session, vault, actor=p.actor, action=action, target=str(target), org_id=p.org_id, now=now
    )


@router.get("")
async def list_webhooks(principal: AdminDep, session: SessionDep) -> list[WebhookOut]:
    """The organisation's webhook endpoints."""
    rows = await session.execute(
        select(Webhook).where(Webhook.org_id == principal.org_id).order_by(Webhook.created_at)
    )
    return [out(h) for h in rows.scalars()]


@router.post("", status_code=201, description=RECEIVER, responses={400: {}})
async def add_webhook(
    body: WebhookIn,
    request: Request,
    principal: AdminDep,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> NewSecret:
    """Add an endpoint; its signing secret is in this answer only."""
    await _receivable(request, body.url)
    try:
        hook, secret = await webhooks.add(session, vault, org_id=principal.org_id, url=body.url)
    except ValueError:
        raise ApiError(400, BAD_URL) from None
    hook.created_at = now
    await session.flush()
    await _audit(session, vault, principal, "webhook.add", hook.id, now)
    return NewSecret(**out(hook).model_dump(), secret=secret)


async def _receivable(request: Request, url: str) -> None:
    """ApiError 400 unless ``url`` may receive events: HTTPS in production, and a public
    address when the operator says so (AMPARO_WEBHOOK_ALLOW_PRIVATE)."""
    settings = request.app.state.settings
    if settings.mode is Mode.production and not url.startswith("https://"):
        raise ApiError(400, BAD_URL)
    try:
        webhooks.check_url(url)
    except ValueError:
        raise ApiError(400, BAD_URL) from None
    if settings.webhooks_public_only:
        try:
            await destinations.check(url)
        except destinations.PrivateDestination:
            raise ApiError(400, PRIVATE_URL) from None


@router.patch("/{hook_id}", responses={400: {}, 404: {}})
async def update_webhook(
    hook_id: uuid.UUID,
    body: WebhookPatch,
    request: Request,
    principal: AdminDep,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> WebhookOut:
    """Pause or resume deliveries to an endpoint, or move it to a new URL (the desk system
    moved: same secret, same history). While paused its events (those raised during the pause
    too) are held, not lost; resuming sends them at once. An event held over 7 days is given
    up: listed in the deliveries as dead, and replayable. Events still waiting when the URL
    changes go to the new one."""
    hook = await _hook(session, principal, hook_id)
    if body.url is not None and body.url != hook.url:
        await _receivable(request, body.url)
        hook.url = body.url
        await _audit(session, vault, principal, "webhook.move", hook.id, now)
    if body.active is not None and body.active != hook.active:
        if body.active:
            await webhooks.resume(session, hook, now)
        hook.active = body.active
        await _audit(session, vault, principal, "webhook.update", hook.id, now)
    return out(hook)


@router.delete("/{hook_id}", status_code=204, responses={404: {}})
async def delete_webhook(
    hook_id: uuid.UUID, principal: AdminDep, session: SessionDep, vault: VaultDep, now: NowDep
) -> None:
    """Remove an endpoint (a desk system retired, or its receiver compromised): nothing more is
    sent to it, and its deliveries, queued and past, and its secrets go with it. To stop only
    for a while, pause it instead (PATCH), which holds its events."""
    hook = await _hook(session, principal, hook_id)
    await session.execute(delete(OutboxMessage).where(OutboxMessage.webhook_id == hook.id))
    await session.delete(hook)
    await _audit(session, vault, principal, "webhook.delete", hook_id, now)


@router.post("/{hook_id}/rotate", responses={404: {}})
async def rotate_secret(
    hook_id: uuid.UUID,
    body: RotateIn,
    principal: AdminDep,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> NewSecret:
    """A new signing secret; the old one signs too until the overlap ends. So does one replaced
    by an earlier rotation whose overlap is still running (until its own end, at the latest
    this one's): rotating twice does not cut off a receiver still on the first secret. An
    overlap of 0 ends every old secret at once (a leaked one). At most three secrets sign: a
    third rotation within the overlaps ends the oldest. ``previous_secret_until``: when the
    last old secret stops signing (null: none does)."""
    hook = await _hook(session, principal, hook_id)
    secret = await webhook_secrets.rotate(
        session, vault, hook=hook, now=now, overlap=timedelta(hours=body.overlap_hours)
    )
    await _audit(session, vault, principal, "webhook.rotate", hook.id, now)
    return NewSecret(**out(hook).model_dump(), secret=secret)


@router.get("/{hook_id}/deliveries", responses={404: {}})
async def deliveries(
    hook_id: uuid.UUID,
    principal: AdminDep,
    session: SessionDep,
    state: OutboxState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryOut]:
    """The delivery log of an endpoint, newest first."""
    hook = await _hook(session, principal, hook_id)
    query = select(OutboxMessage).where(OutboxMessage.webhook_id == hook.id)
    if state is not None:
        query = query.where(OutboxMessage.state == state)
    rows = await session.execute(query.order_by(OutboxMessage.created_at.desc()).limit(limit))
    return [
        DeliveryOut(
            id=m.id,
            event=event_of(m.idempotency_key),
            alert_id=m.alert_id,
            state=m.state,
            attempts=m.attempts,
            created_at=m.created_at,
            next_attempt_at=m.next_attempt_at,
            delivered_at=m.delivered_at,
            last_error=m.last_error,
        )
        for m in rows.scalars()
    ]


@router.post(
    "/{hook_id}/deliveries/{delivery_id}/replay", status_code=202, responses={404: {}, 409: {}}
)
async def replay(
    hook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    principal: AdminDep,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> None:
    """Send a failed (dead) delivery again, with the same event id."""
    hook = await _hook(session, principal, hook_id)
    row = await session.get(OutboxMessage, delivery_id)
    if row is None or row.webhook_id != hook.id:
        raise ApiError(404, errors.NOT_FOUND)
    if not await webhooks.replay(session, org_id=principal.org_id, ids=[row.id], now=now):
        raise ApiError(409, NOT_DEAD)
    await _audit(session, vault, principal, "webhook.replay", row.id, now)
