"""The responder group hears of changes made elsewhere, once, in the language the desk chose.

Both backends (the shared ``sessions`` fixture); the world and the sweep are the engine tests'.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import alert_handling, alerts, checkins, desk_chat, i18n, notices
from core.crypto import Vault
from core.db import transaction
from core.desk_alerts import reopen
from core.models import Alert, AlertKind, DeskGroup, OutboxMessage
from core.outbox import payload
from core.sweep import Sweep
from tests.engine.conftest import T0, Sent, World, alert_of, build_world, outbox

MIN = timedelta(minutes=1)
HANDLE = "quiet-heron-41"


@pytest.fixture
async def world(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> World:
    return await build_world(sessions, vault)


@pytest.fixture
def sweep(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> Sweep:
    return Sweep(sessions, vault, owner="test-sweep")


async def link_group(world: World, channel: str = "telegram", language: str | None = None) -> None:
    async with transaction(world.sessions) as s:
        code, _ = await desk_chat.group_code(
            s, world.vault, org_id=world.org_id, created_by=None, actor="test", now=T0
        )
        chat = "-100777" if channel == "telegram" else "group.Z3JvdXA="
        await desk_chat.link_group(s, world.vault, code=code, channel=channel, group=chat, now=T0)
        row = await s.get(DeskGroup, world.org_id)
        assert row is not None
        row.locale = language


async def group_posts(world: World) -> list[Sent]:
    return [m for m in await outbox(world) if m.person == "group"]


async def panic(world: World) -> Alert:
    async with transaction(world.sessions) as s:
        return await alerts.raise_alert(
            s, world.vault, defender=await world.defender(s), kind=AlertKind.panic, now=T0
        )


async def resolve(world: World, alert: Alert, outcome: str, actor: str, **kw: str) -> None:
    async with transaction(world.sessions) as s:
        await alert_handling.resolve(
            s, world.vault, alert=alert, outcome=outcome, actor=actor, now=T0 + MIN, **kw
        )


async def acknowledge(world: World, alert: Alert, via: str) -> None:
    async with transaction(world.sessions) as s:
        await alert_handling.acknowledge(
            s, world.vault, alert=alert, responder_id=world.responder_ids[0], now=T0, via=via
        )


async def test_a_check_in_that_closes_the_alert_tells_the_group(
    world: World, sweep: Sweep
) -> None:
    await link_group(world)
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - MIN)
    await sweep.run(T0 + 15 * MIN)  # the alert opens
    await sweep.run(T0 + 30 * MIN)  # the desk step: the group sees it
    alert = await alert_of(world)
    assert alert is not None and len(await group_posts(world)) == 1
    async with transaction(world.sessions) as s:
        assert await checkins.check_in(
            s, world.vault, defender=await world.defender(s), now=T0 + 35 * MIN
        )
    posts = await group_posts(world)
    code = notices.short_code(alert.id)
    assert len(posts) == 2
    assert posts[1].text == f"{HANDLE} checked in: alert {code} is closed as safe."
    assert posts[1].priority == alert.priority and posts[1].key.startswith(f"a:{alert.id.hex}:")
    responders = [m.text for m in await outbox(world) if m.person.startswith("responder")]
    assert responders[-1] == f"{HANDLE} checked in: the alert is closed as safe."
    await sweep.run(T0 + 60 * MIN)  # nothing more
    assert len(await group_posts(world)) == 2


async def test_the_group_is_not_told_of_an_alert_it_never_saw(world: World, sweep: Sweep) -> None:
    await link_group(world)
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - MIN)
    await sweep.run(T0 + 15 * MIN)  # open, but the desk step is 15 minutes away
    async with transaction(world.sessions) as s:
        await checkins.check_in(
            s, world.vault, defender=await world.defender(s), now=T0 + 20 * MIN
        )
    assert await group_posts(world) == []


async def test_a_cancel_by_the_defender_tells_the_group(world: World) -> None:
    await link_group(world)
    alert = await panic(world)
    async with transaction(world.sessions) as s:
        await alert_handling.cancel_alert(s, world.vault, alert=alert, now=T0 + MIN)
    posts = await group_posts(world)
    code = notices.short_code(alert.id)
    assert [p.text for p in posts[1:]] == [f"{HANDLE} cancelled alert {code} as a false alarm."]


@pytest.mark.parametrize(
    ("actor", "said"),
    [
        ("responder:{}", "was resolved by a responder in the desk. Outcome: intervention."),
        ("token:{}", "was resolved through the desk API. Outcome: intervention."),
    ],
)
async def test_a_resolve_in_the_desk_tells_the_group_once(
    world: World, actor: str, said: str
) -> None:
    await link_group(world)
    alert = await panic(world)
    who = actor.format(uuid.uuid4())
    await resolve(world, alert, "intervention", who)
    await resolve(world, alert, "intervention", who)  # already resolved: nothing more
    posts = await group_posts(world)
    code = notices.short_code(alert.id)
    assert [p.text for p in posts[1:]] == [f"Alert {code} ({HANDLE}) {said}"]
    stem = f"a:{alert.id.hex}:closed{alert.version + 1}"  # the version the resolve wrote
    assert posts[1].key.split("|")[0] == f"{stem}:group:{world.org_id.hex}"


async def test_a_responders_safe_is_not_reported_as_a_check_in(world: World) -> None:
    alert = await panic(world)
    await resolve(world, alert, "safe", f"responder:{world.responder_ids[0]}")
    responders = [m.text for m in await outbox(world) if m.person == "responder:0"]
    assert responders[-1] == f"The alert for {HANDLE} was closed by the desk."


async def test_a_resolve_from_the_group_itself_is_not_echoed(world: World) -> None:
    await link_group(world)
    alert = await panic(world)
    await acknowledge(world, alert, "chat")
    await resolve(world, alert, "safe", f"responder:{world.responder_ids[0]}", via="chat")
    assert len(await group_posts(world)) == 1  # the alert; flows.desk confirms the rest
    responders = [m.text for m in await outbox(world) if m.person == "responder:0"]
    assert responders[-1] == f"The alert for {HANDLE} was closed by the desk."


@pytest.mark.parametrize("channel", ["telegram", "signal"])
async def test_an_ack_elsewhere_tells_the_group_once(world: World, channel: str) -> None:
    await link_group(world, channel)
    alert = await panic(world)
    await acknowledge(world, alert, "desk")
    await acknowledge(world, alert, "api")  # already acknowledged: nothing more
    posts = await group_posts(world)
    code = notices.short_code(alert.id)
    assert [p.text for p in posts[1:]] == [
        f"Alert {code} ({HANDLE}) was acknowledged by a responder in the desk."
    ]
    async with world.sessions() as s:
        rows = await s.execute(
            select(OutboxMessage).where(OutboxMessage.idempotency_key == posts[1].key)
        )
        message = payload(world.vault, rows.scalar_one())
    keys = [c.key for c in message.choices]
    assert keys == ([notices.group_choice("safe", alert.id)] if channel == "telegram" else [])
    stem = f"a:{alert.id.hex}:ack{alert.version + 1}"  # the version the first ack wrote
    assert posts[1].key.split("|")[0] == f"{stem}:group:{world.org_id.hex}"


async def test_a_reopened_alert_closed_again_is_told_again(world: World) -> None:
    await link_group(world)
    alert = await panic(world)
    await resolve(world, alert, "other", f"responder:{world.responder_ids[0]}")
    async with transaction(world.sessions) as s:
        fresh = await s.get(Alert, alert.id)
        assert fresh is not None
        await reopen(s, world.vault, alert=fresh, actor="test", now=T0 + 2 * MIN)
    await resolve(world, alert, "safe", f"token:{uuid.uuid4()}")
    texts = [p.text for p in await group_posts(world)]
    assert [t.split(") ", 1)[1] for t in texts if t.startswith("Alert ")] == [
        "was resolved by a responder in the desk. Outcome: other.",
        "was resolved through the desk API. Outcome: safe.",
    ]


async def test_the_group_speaks_the_language_the_desk_chose(world: World) -> None:
    await link_group(world, language="es")
    alert = await panic(world)
    (post,) = await group_posts(world)
    code = notices.short_code(alert.id)
    assert post.text.startswith(f"EMERGENCIA: {HANDLE} activó una alerta de emergencia.")
    assert post.text.endswith(f"Prioridad P0 · código {code}")
    responders = [m.text for m in await outbox(world) if m.person == "responder:0"]
    assert responders[0].startswith("EMERGENCY:")  # the responders' own chats: unchanged
    async with transaction(world.sessions) as s:  # relinking keeps the desk's choice
        code2, _ = await desk_chat.group_code(
            s, world.vault, org_id=world.org_id, created_by=None, actor="test", now=T0
        )
        await desk_chat.link_group(
            s, world.vault, code=code2, channel="telegram", group="-100888", now=T0
        )
    async with world.sessions() as s:
        row = await s.get(DeskGroup, world.org_id)
        assert row is not None and row.locale == "es"


def test_the_group_notices_name_the_path_never_the_person() -> None:
    alert_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    code = notices.short_code(alert_id)

    def resolved(by: str, outcome: str) -> str:
        return notices.group_resolved(
            "en", alert_id=alert_id, handle="h-1", by=by, outcome=outcome
        ).text

    assert resolved("defender", "safe") == f"h-1 checked in: alert {code} is closed as safe."
    assert resolved("defender", "false_alarm") == f"h-1 cancelled alert {code} as a false alarm."
    assert resolved("desk", "false_alarm").endswith("in the desk. Outcome: false alarm.")
    assert resolved("api", "whatever").endswith("through the desk API. Outcome: other.")
    signal = notices.group_acknowledged("en", "signal", alert_id=alert_id, handle="h-1", by="api")
    assert signal.text == f"Alert {code} (h-1) was acknowledged through the desk API."
    assert signal.choices == ()
    spanish = notices.group_acknowledged(
        "es", "telegram", alert_id=alert_id, handle="h-1", by="desk"
    )
    assert [c.label for c in spanish.choices] == ["Cerrar: a salvo"]


@pytest.mark.parametrize("channel", ["telegram", "signal"])
def test_a_group_post_gives_back_the_desk_notice_it_was_made_from(channel: str) -> None:
    """What a responder gets in their own chat when the group cannot get its post
    (core.fallback): the desk's words, without the group's buttons and reply commands."""
    alert_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    for locale in i18n.SUPPORTED:
        for base in (
            notices.desk_alert(locale, AlertKind.panic, HANDLE, repeat=False),
            notices.desk_alert(locale, AlertKind.duress, HANDLE, repeat=False, hidden=True),
            notices.desk_alert(locale, AlertKind.missed_checkin, HANDLE, repeat=True),
            notices.desk_ack_timeout(locale, HANDLE, 61),
        ):
            post = notices.desk_group(locale, channel, alert_id=alert_id, priority=0, base=base)
            assert notices.group_base(post, channel) == base


@pytest.mark.parametrize("close", ["resolve", "acknowledge"])
async def test_a_group_linked_after_the_alert_was_posted_hears_nothing_of_it(
    world: World, close: str
) -> None:
    """The desk moved its group to another chat (the old one compromised, say) while an
    alert was open: the new group never saw that alert, and was told it was closed or taken
    (with the defender's handle); the old one, no longer the desk's, must not be told either."""
    await link_group(world)
    alert = await panic(world)
    async with transaction(world.sessions) as s:
        code, _ = await desk_chat.group_code(
            s, world.vault, org_id=world.org_id, created_by=None, actor="test", now=T0
        )
        await desk_chat.link_group(
            s, world.vault, code=code, channel="telegram", group="-100888", now=T0 + MIN
        )
    if close == "resolve":
        await resolve(world, alert, "safe", f"responder:{uuid.uuid4()}")
    else:
        await acknowledge(world, alert, "api")
    assert len(await group_posts(world)) == 1  # the first group's post, nothing since
    async with transaction(world.sessions) as s:  # a new alert does reach the new group
        first = await s.get(Alert, alert.id)
        assert first is not None
        await alert_handling.resolve(
            s, world.vault, alert=first, outcome="safe", actor="t", now=T0
        )
        defender = await world.defender(s)
        await alerts.raise_alert(s, world.vault, defender=defender, kind=AlertKind.panic, now=T0)
    assert len(await group_posts(world)) == 2
