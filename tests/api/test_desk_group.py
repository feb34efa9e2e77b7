"""The responder group through the API: its language, and what it hears of API changes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import get_args

from sqlalchemy import select

from api.routes.desk_group import Language
from core import alerts, desk_chat, i18n, notices
from core.db import transaction
from core.models import (
    Alert,
    AlertKind,
    AuditEntry,
    ChannelAddress,
    Defender,
    DefenderStatus,
    DeskGroup,
    OutboxMessage,
)
from tests.api.conftest import Desk, Org

GROUP = "group.YWJj"


def _now() -> datetime:
    return datetime.now(UTC)


async def link(desk: Desk, org: Org, chat: str = GROUP) -> None:
    async with transaction(desk.sessions) as s:
        code, _ = await desk_chat.group_code(
            s, desk.vault, org_id=org.org.id, created_by=None, actor="test", now=_now()
        )
        linked = await desk_chat.link_group(
            s, desk.vault, code=code, channel="signal", group=chat, now=_now()
        )
    assert linked == org.org.id


async def panic(desk: Desk, org: Org) -> Alert:
    """A fresh defender's panic alert: its first step posts to the group at once."""
    async with transaction(desk.sessions) as s:
        d = Defender(
            id=uuid.uuid4(),
            org_id=org.org.id,
            handle=f"calm-otter-{uuid.uuid4().hex[:4]}",
            status=DefenderStatus.active,
        )
        s.add(d)
        await s.flush()
        return await alerts.raise_alert(
            s, desk.vault, defender=d, kind=AlertKind.panic, now=_now()
        )


async def group_posts(desk: Desk, alert: Alert) -> list[str]:
    async with desk.sessions() as s:
        rows = await s.execute(
            select(OutboxMessage)
            .where(OutboxMessage.alert_id == alert.id, OutboxMessage.recipient == "group")
            .order_by(OutboxMessage.created_at, OutboxMessage.idempotency_key)
        )
        return [
            json.loads(r.get(desk.vault, "payload_enc") or b"{}")["text"] for r in rows.scalars()
        ]


async def handle(desk: Desk, alert: Alert) -> str:
    async with desk.sessions() as s:
        d = await s.get(Defender, alert.defender_id)
        assert d is not None
        return d.handle


async def test_a_resolve_in_the_api_reaches_the_group_once(desk: Desk) -> None:
    await link(desk, desk.a)
    alert = await panic(desk, desk.a)
    code, who = notices.short_code(alert.id), await handle(desk, alert)
    async with await desk.client(desk.a, "responder") as c:
        first = await c.post(
            f"/api/v1/alerts/{alert.id}/resolve", json={"outcome": "intervention"}
        )
        again = await c.post(f"/api/v1/alerts/{alert.id}/resolve", json={"outcome": "safe"})
    assert (first.status_code, again.status_code) == (200, 409)
    posts = await group_posts(desk, alert)
    assert len(posts) == 2 and posts[0].startswith(f"EMERGENCY: {who}")
    assert posts[1] == (
        f"Alert {code} ({who}) was resolved by a responder in the desk. Outcome: intervention."
    )
    username = desk.a.responders["responder"].username
    assert all(username not in p for p in posts)  # the group is not told who


async def test_the_external_desk_acts_by_dedup_key_and_the_group_hears(desk: Desk) -> None:
    await link(desk, desk.a)
    alert = await panic(desk, desk.a)
    code, who = notices.short_code(alert.id), await handle(desk, alert)
    async with await desk.client(desk.a, "token") as c:
        base = f"/api/v1/alerts/by-dedup/{alert.dedup_key}"
        assert (await c.post(f"{base}/acknowledge")).status_code == 200
        assert (await c.post(f"{base}/acknowledge")).status_code == 200  # no second post
        assert (await c.post(f"{base}/resolve", json={"outcome": "safe"})).status_code == 200
    assert (await group_posts(desk, alert))[1:] == [
        f"Alert {code} ({who}) was acknowledged through the desk API.",
        f"Alert {code} ({who}) was resolved through the desk API. Outcome: safe.",
    ]


async def test_another_organisations_group_hears_nothing(desk: Desk) -> None:
    await link(desk, desk.b, "group.b3RoZXI=")
    alert = await panic(desk, desk.a)  # organisation A has no group
    async with await desk.client(desk.a, "admin") as c:
        await c.post(f"/api/v1/alerts/{alert.id}/resolve", json={"outcome": "safe"})
    assert await group_posts(desk, alert) == []


async def test_an_admin_sets_the_groups_language(desk: Desk) -> None:
    async with await desk.client(desk.a, "admin") as c:
        assert (await c.get("/api/v1/desk-group")).status_code == 404
        assert (await c.patch("/api/v1/desk-group", json={"language": "es"})).status_code == 404
        await link(desk, desk.a)
        shown = await c.get("/api/v1/desk-group")
        assert shown.status_code == 200
        body = shown.json()
        assert (body["channel"], body["language"], body["language_is_default"]) == (
            "signal",
            "en",
            True,
        )
        assert (await c.patch("/api/v1/desk-group", json={"language": "de"})).status_code == 422
        assert (await c.patch("/api/v1/desk-group", json={})).status_code == 422
        chosen = await c.patch("/api/v1/desk-group", json={"language": "es"})
        assert chosen.status_code == 200
        assert (chosen.json()["language"], chosen.json()["language_is_default"]) == ("es", False)
        alert = await panic(desk, desk.a)
        (post,) = await group_posts(desk, alert)
        assert post.startswith("EMERGENCIA: ") and "Prioridad P0" in post
        await link(desk, desk.a, "group.bmV3")  # relinked: the language stays
        assert (await c.get("/api/v1/desk-group")).json()["language"] == "es"
        back = await c.patch("/api/v1/desk-group", json={"language": None})
        assert (back.json()["language"], back.json()["language_is_default"]) == ("en", True)
    async with desk.sessions() as s:
        rows = await s.execute(
            select(AuditEntry).where(AuditEntry.action == "desk_group.language")
        )
        entries = list(rows.scalars())
    assert [e.org_id for e in entries] == [desk.a.org.id] * 2


async def test_only_admins_see_or_set_the_groups_language(desk: Desk) -> None:
    await link(desk, desk.a)
    for role in ("responder", "observer", "token"):
        async with await desk.client(desk.a, role) as c:
            assert (await c.get("/api/v1/desk-group")).status_code == 403
            answer = await c.patch("/api/v1/desk-group", json={"language": "fr"})
            assert answer.status_code == 403
    async with await desk.client(desk.b, "admin") as c:  # B has no group; A's is not B's
        assert (await c.get("/api/v1/desk-group")).status_code == 404
        assert (await c.patch("/api/v1/desk-group", json={"language": "fr"})).status_code == 404
    async with desk.anonymous() as c:
        assert (await c.get("/api/v1/desk-group")).status_code == 401


def test_the_api_offers_exactly_the_supported_languages() -> None:
    assert get_args(Language) == i18n.SUPPORTED


async def test_the_desk_sees_when_its_group_cannot_be_reached(desk: Desk) -> None:
    """A post that failed for good marks the group's chat blocked (core.fallback.block): the
    desk sees since when, until a post arrives again or an admin relinks the group."""
    await link(desk, desk.a)
    since = _now()
    async with transaction(desk.sessions) as s:
        group = await s.get(DeskGroup, desk.a.org.id)
        assert group is not None
        address = await s.get(ChannelAddress, group.address_id)
        assert address is not None
        address.blocked_at = since
    async with await desk.client(desk.a, "admin") as c:
        assert (await c.get("/api/v1/desk-group")).json()["unreachable_since"] is not None
        await link(desk, desk.a)  # the bot is back in the group
        assert (await c.get("/api/v1/desk-group")).json()["unreachable_since"] is None
