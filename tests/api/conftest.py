"""A desk with two organisations, each with an admin, a responder, an observer and a token,
a defender, an open alert, a report, a policy and an invite. Runs on both backends."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.app import create_app
from api.deps import COOKIE, CSRF_HEADER
from core import alerts, api_tokens, auth, desk_sessions, webhooks
from core.accounts import create_org
from core.config import Settings
from core.crypto import Vault, seal
from core.db import transaction
from core.defenders import new_address
from core.discreet import NOT_DELETED
from core.escalation import Policy
from core.models import (
    Alert,
    AlertKind,
    Defender,
    DefenderStatus,
    EscalationPolicy,
    InviteCode,
    Organisation,
    OutboxMessage,
    OutboxState,
    Report,
    Responder,
    Role,
    Webhook,
)
from core.throttle import Limits

# Tests only: a cheap Argon2id hash (the production hasher verifies any parameters it reads).
CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
PASSWORD = "correct horse battery staple"
PASSPHRASE = "a long organisation passphrase"
BASE = "https://desk.test"


@dataclass
class Org:
    org: Organisation
    responders: dict[str, Responder] = field(default_factory=dict)  # by role name
    totp: dict[str, str] = field(default_factory=dict)
    token: str = ""
    defender: Defender | None = None
    alert: Alert | None = None
    report: Report | None = None
    policy: EscalationPolicy | None = None
    invite: InviteCode | None = None
    webhook: Webhook | None = None
    dead: OutboxMessage | None = None
    private_key: bytes = b""


@dataclass
class Desk:
    app: FastAPI
    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    a: Org
    b: Org

    def anonymous(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)

    async def client(self, org: Org, role: str) -> httpx.AsyncClient:
        """A client holding a live session of ``role`` (or the org's API token for "token")."""
        c = self.anonymous()
        if role == "token":
            c.headers["Authorization"] = f"Bearer {org.token}"
            return c
        async with transaction(self.sessions) as s:
            _row, token, csrf = await desk_sessions.open_session(
                s, org.responders[role], datetime.now(UTC)
            )
        c.cookies.set(COOKIE, token, domain="desk.test")
        c.headers[CSRF_HEADER] = csrf
        return c


def code(secret: str, at: datetime | None = None) -> str:
    return pyotp.TOTP(secret).at(at or datetime.now(UTC))


async def make_org(s: AsyncSession, vault: Vault, name: str) -> Org:
    org = Org(await create_org(s, vault, name, PASSPHRASE, fast_kdf=True))
    o = org.org
    for role in Role:
        secret = pyotp.random_base32()
        r = Responder(
            id=uuid.uuid4(),
            org_id=o.id,
            username=f"{role.value}-{name}",
            role=role,
            password_hash=CHEAP.hash(PASSWORD),
            must_change_password=False,
            on_duty=role is Role.responder,
        )
        r.put(vault, "totp_secret_enc", secret)
        s.add(r)
        org.responders[role.value], org.totp[role.value] = r, secret
    await s.flush()
    _row, org.token = await api_tokens.create_token(
        s, org_id=o.id, name="case system", scopes=sorted(auth.TOKEN_SCOPES), now=_now()
    )
    org.policy = EscalationPolicy(
        id=uuid.uuid4(), org_id=o.id, name="default", steps=Policy().to_json(), is_default=True
    )
    org.defender = Defender(
        id=uuid.uuid4(), org_id=o.id, handle=f"calm-heron-{name}", status=DefenderStatus.active
    )
    s.add_all([org.policy, org.defender])
    await s.flush()
    org.alert = await make_alert(s, org, AlertKind.panic, _now())
    org.report = make_report(vault, org, '=HYPERLINK("http://x")')
    org.invite = InviteCode(
        id=uuid.uuid4(), org_id=o.id, code_index=vault.blind_index("t", name), expires_at=_now()
    )
    s.add_all([org.report, org.invite])
    org.webhook, _secret = await webhooks.add(s, vault, org_id=o.id, url="https://desk.example/in")
    await s.flush()
    org.dead = OutboxMessage(
        id=uuid.uuid4(),
        priority=0,
        channel="webhook",
        alert_id=org.alert.id,
        webhook_id=org.webhook.id,
        recipient="webhook",
        idempotency_key=f"a:{org.alert.id.hex}:0:alert.triggered|webhook:{org.webhook.id}",
        state=OutboxState.dead,
        attempts=8,
        last_error="webhook HTTP 503",
    )
    org.dead.put(vault, "payload_enc", b'{"event_id": "e1"}')
    s.add(org.dead)
    await s.flush()
    return org


def _now() -> datetime:
    return datetime.now(UTC)


async def make_alert(
    s: AsyncSession, org: Org, kind: AlertKind, at: datetime, *, resolved: bool = False
) -> Alert:
    assert org.defender is not None
    key, alert_id = alerts.dedup_key(org.defender.id, kind), uuid.uuid4()
    alert = Alert(
        id=alert_id,
        org_id=org.org.id,
        defender_id=org.defender.id,
        kind=kind,
        priority=0 if kind in (AlertKind.panic, AlertKind.duress) else 1,
        dedup_key=alerts.own_key(key, alert_id),
        open_key=None if resolved else key,
        policy_snapshot=Policy().to_json(),
        triggered_at=at,
        next_step_at=at + timedelta(minutes=15),
        state="resolved" if resolved else "triggered",
    )
    s.add(alert)
    await s.flush()
    return alert


def make_report(vault: Vault, org: Org, country: str) -> Report:
    assert org.org.public_key is not None and org.defender is not None
    report = Report(
        id=uuid.uuid4(),
        org_id=org.org.id,
        defender_id=org.defender.id,
        receipt_code=uuid.uuid4().hex[:12],
        sealed_body=b"",
    )
    triage = {"type_of_act": "02010302", "urgency": "high", "country": country}
    report.put(vault, "triage_enc", json.dumps(triage))
    report.sealed_body = seal(
        org.org.public_key,
        org_id=org.org.id,
        record_id=report.id,
        kind="report",
        body={"narrative": "SECRET-CANARY"},
    )
    return report


@pytest.fixture
async def desk(engine: AsyncEngine, vault: Vault) -> AsyncIterator[Desk]:
    app = create_app(Settings(), engine, vault)
    app.state.limits = Limits()
    sessions = app.state.sessions
    async with transaction(sessions) as s:
        a = await make_org(s, vault, "alpha")
        b = await make_org(s, vault, "bravo")
    yield Desk(app, sessions, vault, a, b)


@pytest.fixture
async def site(desk: Desk) -> AsyncIterator[str]:
    """The desk's app served by uvicorn on a loopback port (browsers, the CLI)."""
    config = uvicorn.Config(desk.app, host="127.0.0.1", port=0, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def undeletable(desk: Desk, defender_id: uuid.UUID, n: int) -> None:
    """``n`` messages discreet mode gave up deleting from the defender's chat, among rows that
    do not count: a deletion done, one whose chat is gone, and an ordinary message dead."""
    async with transaction(desk.sessions) as s:
        address = new_address(desk.vault, "telegram", str(uuid.uuid4().int % 10**9))
        address.defender_id = defender_id
        s.add(address)
        await s.flush()
        rows = [(OutboxState.dead, "timeout", "del:")] * (n - n // 2)
        rows += [(OutboxState.failed, NOT_DELETED, "del:")] * (n // 2)
        rows += [
            (OutboxState.delivered, None, "del:"),
            (OutboxState.failed, "blocked", "del:"),
            (OutboxState.dead, "timeout", "m:"),
        ]
        s.add_all(
            OutboxMessage(
                priority=3,
                channel="telegram",
                address_id=address.id,
                idempotency_key=f"{prefix}{uuid.uuid4().hex}",
                state=state,
                last_error=error,
            )
            for state, error, prefix in rows
        )
