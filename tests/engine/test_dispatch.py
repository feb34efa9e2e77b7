"""The dispatcher against a stand-in channel: 429, 5xx and 403; priorities; shredding."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from datetime import time as clock

import aiohttp
import pytest
from sqlalchemy import func, select, update

from core import alert_handling, alerts, checkins, retention, webhook_secrets, webhooks
from core.db import transaction
from core.delivery import record
from core.dispatch import Dispatcher
from core.messages import DeliveryError, Outbound
from core.models import Alert, AlertKind, ChannelAddress, CheckIn, OutboxMessage, Priority, Webhook
from core.outbox import Item, enqueue_many
from core.ratelimit import Limit
from core.sweep import Sweep
from tests.engine.conftest import T0, World, address, alert_of, build_world, timeline
from tests.engine.standin import StandIn
from tests.standins.http_receiver import Receiver

SEC, MIN = timedelta(seconds=1), timedelta(minutes=1)


async def standin_world(sessions, vault) -> World:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin")
    async with transaction(sessions) as s:  # responder 0 can also be reached on "backup"
        extra = address(vault, "backup", "r0-backup", responder_id=world.responder_ids[0])
        extra.preference = 1
        s.add(extra)
    return world


def dispatcher(
    world: World, channels: dict[str, StandIn], http: aiohttp.ClientSession | None = None
) -> Dispatcher:
    return Dispatcher(
        world.sessions, world.vault, channels, owner="test", http=http, limits={}, rng=lambda: 0.5
    )


async def point_webhook_at(world: World, url: str) -> None:
    async with transaction(world.sessions) as s:
        await s.execute(update(Webhook).values(url=url))


async def panic(world: World) -> uuid.UUID:
    async with transaction(world.sessions) as s:
        alert = await alerts.raise_alert(
            s, world.vault, defender=await world.defender(s), kind=AlertKind.panic, now=T0
        )
        return alert.id


async def states(world: World) -> dict[str, int]:
    async with world.sessions() as s:
        rows = await s.execute(
            select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
        )
        return {str(state): n for state, n in rows}


async def test_it_honours_retry_after_retries_5xx_and_falls_back_on_403(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await standin_world(sessions, vault)
    main, backup = StandIn("standin"), StandIn("backup")
    main.fail("c0-quiet-heron-41", DeliveryError("rate limited", retry_after=30))
    main.fail("c1-quiet-heron-41", DeliveryError("HTTP 502"), DeliveryError("HTTP 503"))
    main.fail("r0-quiet-heron-41", DeliveryError("forbidden", permanent=True))
    async with Receiver(statuses=[500, 204]) as desk, webhooks.client() as http:
        await point_webhook_at(world, desk.url())
        hits = desk.hits
        d = dispatcher(world, {"standin": main, "backup": backup}, http)
        alert_id = await panic(world)
        await d.drain(T0)
        assert main.to("c0-quiet-heron-41") == [] and len(main.to("c1-quiet-heron-41")) == 0
        assert len(backup.to("r0-backup")) == 1  # 403 on the main chat: fallback at once
        await d.drain(T0 + 10 * SEC)  # 5xx: retried with backoff (1.5 s, then 3 s)
        assert main.to("c1-quiet-heron-41") == []
        await d.drain(T0 + 14 * SEC)  # the 3 s count from the 503's answer
        assert len(main.to("c1-quiet-heron-41")) == 1
        assert [a for a, _t in main.calls].count("c1-quiet-heron-41") == 3
        assert len(hits) == 2  # the webhook got its 500, then its 2xx
        await d.drain(T0 + 29 * SEC)
        assert main.to("c0-quiet-heron-41") == []  # retry_after is honoured, never less
        await d.drain(T0 + 34 * SEC)
        assert len(main.to("c0-quiet-heron-41")) == 1

    assert await states(world) == {"delivered": 4, "failed": 1}
    kinds = [e.kind for e in await timeline(world, alert_id)]
    assert "delivery_fallback" in kinds
    async with world.sessions() as s:
        rows = (await s.execute(select(OutboxMessage))).scalars().all()
        assert all(r.payload_enc is None and r.dek is None for r in rows)  # shredded
        blocked = await s.execute(
            select(ChannelAddress).where(ChannelAddress.blocked_at.is_not(None))
        )
        assert len(blocked.scalars().all()) == 1
    first, second = hits
    assert first.headers["Amparo-Event-Id"] == second.headers["Amparo-Event-Id"]
    body = json.loads(second.body)
    assert body["type"] == "alert.triggered" and body["alert"]["kind"] == "panic"
    assert webhook_secrets.verify(
        second.headers["Amparo-Signature"],
        second.body,
        [world.webhook_secret.encode()],
        now=(T0 + 10 * SEC).timestamp(),
    )


async def test_a_webhook_redirect_is_not_followed_but_retried(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await standin_world(sessions, vault)
    async with Receiver(statuses=[307]) as desk, webhooks.client() as http:
        desk.headers["Location"] = desk.url("/elsewhere")
        await point_webhook_at(world, desk.url())
        await panic(world)
        await dispatcher(world, {"standin": StandIn("standin")}, http).drain(T0)
    assert [h.path for h in desk.hits] == ["/hook"]
    async with world.sessions() as s:
        row = (
            await s.execute(select(OutboxMessage).where(OutboxMessage.channel == "webhook"))
        ).scalar_one()
    assert (str(row.state), row.last_error) == ("pending", "webhook HTTP 307")


async def test_a_webhook_goes_through_the_proxy_in_the_environment(  # type: ignore[no-untyped-def]
    sessions, vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver plays the proxy: the desk's own host (desk.invalid) does not resolve."""
    world = await standin_world(sessions, vault)
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with Receiver() as proxy, webhooks.client() as http:
        monkeypatch.setenv("HTTP_PROXY", proxy.url(""))
        await panic(world)
        await dispatcher(world, {"standin": StandIn("standin")}, http).drain(T0)
    assert [(h.path, h.headers["Host"]) for h in proxy.hits] == [("/hook", "desk.invalid")]
    async with world.sessions() as s:
        hook = (
            await s.execute(select(OutboxMessage).where(OutboxMessage.channel == "webhook"))
        ).scalar_one()
    assert str(hook.state) == "delivered"


async def test_it_sends_a_p0_before_ten_thousand_queued_p3(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await standin_world(sessions, vault)
    async with transaction(world.sessions) as s:
        target = (
            await s.execute(
                select(ChannelAddress).where(ChannelAddress.defender_id == world.defender_id)
            )
        ).scalar_one()
        items = [
            Item(
                "standin",
                int(Priority.P3),
                f"broadcast:{n}",
                Outbound(f"news {n}"),
                address_id=target.id,
            )
            for n in range(10_000)
        ]
        await enqueue_many(s, world.vault, items, now=T0 - 60 * SEC)
    main, backup = StandIn("standin"), StandIn("backup")
    d = dispatcher(world, {"standin": main, "backup": backup})
    for _ in range(3):
        await d.dispatch_once(T0)
    assert len(main.sent) == 96 and all(t.startswith("news") for _a, t in main.sent)
    await panic(world)
    await d.dispatch_once(T0 + SEC)
    p0 = {"c0-quiet-heron-41", "c1-quiet-heron-41", "r0-quiet-heron-41"}
    assert {a for a, _t in main.sent[96:99]} == p0  # the P0 notices jump the queue
    assert all(t.startswith("news") for _a, t in main.sent[99:])


async def test_it_escalates_at_once_when_a_blocked_defender_cannot_get_the_reminder(  # type: ignore[no-untyped-def]
    sessions, vault
) -> None:
    world = await standin_world(sessions, vault)
    main = StandIn("standin")
    main.fail("d-quiet-heron-41", DeliveryError("forbidden", permanent=True))
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * SEC)
    sweep, d = Sweep(world.sessions, world.vault, owner="s"), dispatcher(world, {"standin": main})
    await sweep.run(T0)  # the reminder …
    await d.drain(T0 + SEC)  # … bounces: the bot was blocked (maybe by whoever holds the phone)
    await sweep.run(T0 + 2 * SEC)  # the alert opens now, not after the 15 minutes of grace
    await d.drain(T0 + 3 * SEC)
    assert main.to("c0-quiet-heron-41") and main.to("c1-quiet-heron-41")


async def test_it_brings_the_desk_forward_when_no_contact_can_be_reached(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await standin_world(sessions, vault)
    main = StandIn("standin")
    for n in (0, 1):
        main.fail(f"c{n}-quiet-heron-41", DeliveryError("unregistered", permanent=True))
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * SEC)
    sweep, d = Sweep(world.sessions, world.vault, owner="s"), dispatcher(world, {"standin": main})
    await sweep.run(T0 + 15 * 60 * SEC)  # the alert opens: contacts are told …
    await d.drain(T0 + 15 * 60 * SEC)  # … but cannot be reached
    await sweep.run(T0 + 15 * 60 * SEC + SEC)  # so the desk is told now, not 15 minutes later
    await d.drain(T0 + 15 * 60 * SEC + SEC)
    assert main.to("r0-quiet-heron-41")
    alert_id = await timeline_alert(world)
    kinds = [e.kind for e in await timeline(world, alert_id)]
    assert kinds.count("recipient_unreachable") == 2 and "desk_brought_forward" in kinds


async def timeline_alert(world: World) -> uuid.UUID:
    alert = await alert_of(world)
    assert alert is not None
    return alert.id


async def test_a_rate_limited_pass_claims_only_what_it_can_send_soon(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """A broadcast draining at the bot's rate never holds a pass (and a P0 behind it) for
    long: a pass claims what the channel can send within the horizon; the rest stays queued."""
    world = await standin_world(sessions, vault)
    async with transaction(world.sessions) as s:
        target = (
            await s.execute(select(ChannelAddress.id).where(ChannelAddress.responder_id.is_(None)))
        ).scalars()
        items = [
            Item(
                "standin", int(Priority.P3), f"broadcast:{n}", Outbound(f"news {n}"), address_id=a
            )
            for n, a in enumerate(list(target) * 25)
        ]
        await enqueue_many(s, world.vault, items, now=T0 - 60 * SEC)
    main = StandIn("standin")
    d = Dispatcher(
        world.sessions,
        world.vault,
        {"standin": main},
        owner="test",
        limits={"standin": Limit(per_channel=10.0, per_recipient=None)},
    )
    started = time.monotonic()
    first = await d.dispatch_once(T0)
    assert first == 12  # ten at once (a second's worth) and two within the 0.2 s horizon
    assert time.monotonic() - started < 1.0  # the old pass waited for 32 slots: 2.2 s

    # Out of budget: only what refilled meanwhile (10 a second, on the wall clock: a loaded
    # machine lets more refill between passes) and the horizon's two are claimed; the rest is
    # not even touched.
    def refilled(since: float) -> int:
        return 2 + math.ceil(10 * (time.monotonic() - since)) + 1

    before = time.monotonic()
    second = await d.dispatch_once(T0)
    assert second <= refilled(before)
    before = time.monotonic()
    third = await d.dispatch_once(T0)
    assert third <= refilled(before) and len(main.sent) == first + second + third
    sent = first + second + third
    assert await states(world) == {"delivered": sent, "pending": len(items) - sent}
    async with world.sessions() as s:
        tried = select(func.count()).where(OutboxMessage.attempts > 0)
        assert (await s.execute(tried)).scalar() == sent


def test_the_bot_wide_telegram_rate_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    def rate() -> float | None:
        d = Dispatcher(None, None, {}, owner="t")  # type: ignore[arg-type]
        return d.buckets["telegram"].rate

    assert rate() == 30.0  # Telegram's limit for a normal bot
    monkeypatch.setenv("AMPARO_TELEGRAM_RATE", "1000")  # paid broadcasts
    assert rate() == 1000.0
    monkeypatch.setenv("AMPARO_TELEGRAM_RATE", "0")  # refused by the settings: the default
    assert rate() == 30.0


def test_the_rate_to_one_chat_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    def gaps() -> dict[str, float]:
        d = Dispatcher(None, None, {}, owner="t")  # type: ignore[arg-type]
        return {name: spacing.gap for name, spacing in d.spacing.items()}

    assert gaps() == {"telegram": 1.0, "signal": 1.0}  # about one a second, per chat
    monkeypatch.setenv("AMPARO_CHAT_RATE", "20")  # a stand-in that takes bursts
    assert gaps() == {"telegram": 0.05, "signal": 0.05}
    monkeypatch.setenv("AMPARO_CHAT_RATE", "500")  # refused by the settings: the default
    assert gaps() == {"telegram": 1.0, "signal": 1.0}


async def test_a_panic_notice_outlasts_a_channel_outage_and_arrives(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """signal-cli restarting or a provider outage: twelve tries at P0's 30 s cap are four
    minutes; the notice must still reach the contact when the channel comes back."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    channel.fail("c0-quiet-heron-41", *[DeliveryError("ClientConnectorError")] * 50)
    d = dispatcher(world, {"standin": channel})
    await panic(world)
    at = T0
    while at < T0 + timedelta(minutes=5):  # down for five minutes: 30-odd tries
        await d.drain(at)
        at += 5 * SEC
    assert channel.to("c0-quiet-heron-41") == [] and "dead" not in await states(world)
    channel.script.clear()  # back
    await d.drain(T0 + timedelta(minutes=6))
    assert len(channel.to("c0-quiet-heron-41")) == 1


async def test_a_notice_given_up_after_a_day_marks_the_person_unreachable(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    channel.fail("c0-quiet-heron-41", *[DeliveryError("ClientConnectorError")] * 50)
    d = dispatcher(world, {"standin": channel})
    alert_id = await panic(world)
    await d.drain(T0)
    await d.drain(T0 + timedelta(hours=24, minutes=1))
    kinds = [e.kind for e in await timeline(world, alert_id)]
    assert "delivery_dead" in kinds and "recipient_unreachable" in kinds


async def test_no_alarm_reaches_a_contact_after_the_all_clear(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    channel.fail("c0-quiet-heron-41", DeliveryError("rate limited", retry_after=40))
    d = dispatcher(world, {"standin": channel})
    async with transaction(sessions) as s:
        await alerts.raise_alert(
            s, vault, defender=await world.defender(s), kind=AlertKind.missed_checkin, now=T0
        )
    await d.drain(T0)  # contact 0: 429, again in 40 s; contact 1 told
    async with transaction(sessions) as s:  # "I'm safe" ten seconds later
        defender = await world.defender(s)
        assert await checkins.check_in(s, vault, defender=defender, now=T0 + 10 * SEC)
    for at in (10, 60, 600):
        await d.drain(T0 + at * SEC)
    _alarm, all_clear = channel.to("c1-quiet-heron-41")  # contact 1 (French): both, in order
    assert all_clear.startswith("Bonne nouvelle")
    [told] = channel.to("c0-quiet-heron-41")  # contact 0 (Spanish): the retried alarm withdrawn
    assert told.startswith("Buenas noticias")


async def test_a_blocked_reminder_cuts_that_deadline_short_and_no_other(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """Day 1: the defender had blocked the bot, so the alert opens at once (right). Day 2,
    unblocked, a check-in two minutes late is within the routine's whole grace again."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    d, sweep = dispatcher(world, {"standin": channel}), Sweep(sessions, vault, owner="s")
    async with transaction(sessions) as s:
        defender = await world.defender(s)
        at_eight = clock(20, 0)
        await checkins.set_routine(
            s, defender=defender, local_time=at_eight, days="0123456", now=T0
        )
    due = T0.replace(hour=20)
    channel.fail("d-quiet-heron-41", None, DeliveryError("forbidden", permanent=True))
    day_one = ((due - 10 * MIN, due - 10 * MIN), (due, due + 2 * SEC), (due + 5 * SEC,) * 2)
    for at, drain in day_one:
        await sweep.run(at)
        await d.drain(drain)
    async with sessions() as s:  # day 1: missed at once, and the routine rolled over
        opened = list((await s.execute(select(Alert))).scalars())
        routine = (await s.execute(select(CheckIn))).scalar_one()
    assert [a.triggered_at - due < MIN for a in opened] == [True]
    assert routine.grace_s == 15 * 60 and routine.due_at == due + timedelta(days=1)
    async with transaction(sessions) as s:
        await checkins.check_in(s, vault, defender=await world.defender(s), now=due + 20 * MIN)
    due2 = due + timedelta(days=1)
    for at in (due2 - 10 * MIN, due2, due2 + 5 * SEC, due2 + MIN):
        await sweep.run(at)
        await d.drain(at)
    async with transaction(sessions) as s:  # two minutes late, within the grace
        await checkins.check_in(s, vault, defender=await world.defender(s), now=due2 + 2 * MIN)
    for at in (due2 + 16 * MIN, due2 + 30 * MIN):
        await sweep.run(at)
    async with sessions() as s:
        later = list((await s.execute(select(Alert).where(Alert.triggered_at >= due2))).scalars())
    assert later == []


async def test_a_paused_webhook_holds_its_events_and_resuming_sends_them(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """A desk pauses its endpoint while it fixes its receiver: the alert.triggered queued
    meanwhile is held (not given up, its payload kept) and goes out on resume."""
    world = await standin_world(sessions, vault)
    async with Receiver() as desk, webhooks.client() as http:
        await point_webhook_at(world, desk.url())
        await panic(world)  # queued, then the endpoint is paused before it goes
        async with transaction(sessions) as s:
            await s.execute(update(Webhook).values(active=False))
        d = dispatcher(world, {"standin": StandIn("standin")}, http)
        await d.drain(T0)
        assert desk.hits == []
        async with world.sessions() as s:
            held = (
                await s.execute(select(OutboxMessage).where(OutboxMessage.channel == "webhook"))
            ).scalar_one()
        assert str(held.state) == "pending" and held.attempts == 0
        assert held.payload_enc is not None
        async with transaction(sessions) as s:
            hook = (await s.execute(select(Webhook))).scalar_one()
            await webhooks.resume(s, hook, T0 + MIN)
        await d.drain(T0 + MIN)
    assert [json.loads(h.body)["type"] for h in desk.hits] == ["alert.triggered"]


async def test_an_event_claimed_as_its_webhook_resumes_goes_at_once(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """The resume brings forward the events waiting; one a dispatcher claimed a moment before,
    seeing the endpoint still paused, is not waiting but being sent: it goes at once too, not
    an hour later."""
    world = await standin_world(sessions, vault)
    async with Receiver() as desk, webhooks.client() as http:
        await point_webhook_at(world, desk.url())
        async with transaction(sessions) as s:
            await s.execute(update(Webhook).values(active=False))
        await panic(world)
        d = dispatcher(world, {"standin": StandIn("standin")}, http)
        claimed = await d.claim(T0)
        assert [j.paused for j in claimed if j.channel == "webhook"] == [True]
        async with transaction(sessions) as s:  # the desk resumes meanwhile
            hook = (await s.execute(select(Webhook))).scalar_one()
            await webhooks.resume(s, hook, T0 + SEC)
        attempts = await d.send_all(claimed, T0)
        async with transaction(sessions) as s:
            await record(s, vault, attempts, owner="test", now=T0, rng=lambda: 0.5)
        await d.drain(T0 + 2 * SEC)
    assert [json.loads(h.body)["type"] for h in desk.hits] == ["alert.triggered"]


async def test_a_resume_committing_while_a_held_event_is_recorded_is_not_missed(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    """The resume and the recording of an event claimed while paused, at the same moment: the
    recording waits for the resume's transaction and sees the endpoint resumed (else the
    resume, finding the event being sent, and the recording, finding the endpoint paused,
    would each leave it for the other: an hour's wait)."""
    world = await standin_world(sessions, vault)
    async with transaction(sessions) as s:
        await s.execute(update(Webhook).values(active=False))
    await panic(world)
    async with webhooks.client() as http:
        d = dispatcher(world, {"standin": StandIn("standin")}, http)
        claimed = [j for j in await d.claim(T0) if j.channel == "webhook"]
        assert [j.paused for j in claimed] == [True]
        attempts = await d.send_all(claimed, T0)

    async def recording() -> None:
        async with transaction(sessions) as s:
            await record(s, vault, attempts, owner="test", now=T0, rng=lambda: 0.5)

    async with transaction(sessions) as s:  # the desk resumes
        hook = (await s.execute(select(Webhook))).scalar_one()
        await webhooks.resume(s, hook, T0 + SEC)
        task = asyncio.create_task(recording())
        await asyncio.sleep(0.3)
        assert not task.done()  # waiting for the resume to commit
    await task
    async with sessions() as s:
        row = await s.get(OutboxMessage, claimed[0].row_id)
    assert row is not None and str(row.state) == "pending"
    assert row.next_attempt_at <= T0 + SEC


async def test_an_event_waiting_for_a_moved_endpoint_goes_to_its_new_url(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """The desk moves its receiver (PATCH /webhooks/{id} with a new url) while an event is
    waiting for a retry: the retry goes to the new URL, not the old one."""
    world = await standin_world(sessions, vault)
    async with Receiver(statuses=[503]) as old, Receiver() as new, webhooks.client() as http:
        await point_webhook_at(world, old.url())
        await panic(world)
        d = dispatcher(world, {"standin": StandIn("standin")}, http)
        await d.drain(T0)
        assert [json.loads(h.body)["type"] for h in old.hits] == ["alert.triggered"]
        await point_webhook_at(world, new.url())
        await d.drain(T0 + 10 * MIN)
    assert len(old.hits) == 1
    assert [json.loads(h.body)["type"] for h in new.hits] == ["alert.triggered"]


async def test_events_raised_while_a_webhook_is_paused_are_held_for_it(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """A panic raised during the desk's maintenance still reaches its system on resume; an
    endpoint left paused for over a week gets its old events given up (listed, replayable)."""
    world = await standin_world(sessions, vault)
    async with Receiver() as desk, webhooks.client() as http:
        await point_webhook_at(world, desk.url())
        async with transaction(sessions) as s:
            await s.execute(update(Webhook).values(active=False))
        await panic(world)  # raised while paused
        d = dispatcher(world, {"standin": StandIn("standin")}, http)
        await d.drain(T0)
        assert desk.hits == []
        async with transaction(sessions) as s:
            hook = (await s.execute(select(Webhook))).scalar_one()
            await webhooks.resume(s, hook, T0 + MIN)
        await d.drain(T0 + MIN)
        assert [json.loads(h.body)["type"] for h in desk.hits] == ["alert.triggered"]
        async with transaction(sessions) as s:  # paused again, and left so
            await s.execute(update(Webhook).values(active=False))
            alert = await alerts.open_alert(
                s, alerts.dedup_key(world.defender_id, AlertKind.panic)
            )
            assert alert is not None
            await alert_handling.resolve(
                s, vault, alert=alert, outcome="safe", actor="desk", now=T0 + MIN
            )
        for day in range(1, 9):
            await d.drain(T0 + timedelta(days=day))
        assert len(desk.hits) == 1
        async with world.sessions() as s:
            org_id = (await s.execute(select(Webhook.org_id))).scalar_one()
            [dead] = await webhooks.dead_letters(s, org_id=org_id)
        assert dead.last_error == "paused" and dead.payload_enc is not None
        assert json.loads(dead.get(vault, "payload_enc"))["type"] == "alert.resolved"
        kinds = [e.kind for e in await timeline(world, alert.id)]
        assert "delivery_dead" in kinds
        later = T0 + timedelta(days=9)  # replayed while still paused: held again, from now
        async with transaction(sessions) as s:
            assert await webhooks.replay(s, org_id=org_id, ids=[dead.id], now=later)
        await d.drain(later)
        async with world.sessions() as s:
            held = await s.get(OutboxMessage, dead.id)
            assert held is not None and str(held.state) == "pending"
        async with transaction(sessions) as s:
            hook = (await s.execute(select(Webhook))).scalar_one()
            await webhooks.resume(s, hook, later + MIN)
        await d.drain(later + MIN)
    assert [json.loads(h.body)["type"] for h in desk.hits] == ["alert.triggered", "alert.resolved"]


async def test_an_alert_open_for_weeks_still_ends_with_an_all_clear(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """A detention lasts longer than the outbox's 30 days: the rows that say who was alerted
    stay while the alert is open, so its all-clear still reaches them."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    d = dispatcher(world, {"standin": channel})
    await panic(world)
    await d.drain(T0)
    later = T0 + timedelta(days=31)
    async with transaction(sessions) as s:
        assert (await retention.purge(s, now=later))["outbox"] == 0
    async with transaction(sessions) as s:
        alert = await alerts.open_alert(s, alerts.dedup_key(world.defender_id, AlertKind.panic))
        assert alert is not None
        await alert_handling.resolve(
            s, vault, alert=alert, outcome="safe", actor="desk", now=later
        )
    await d.drain(later)
    assert len(channel.to("c0-quiet-heron-41")) == 2  # the panic notice, then the all-clear
    async with transaction(sessions) as s:  # once resolved, the old rows go as before
        assert (await retention.purge(s, now=later + MIN))["outbox"] > 0


class Slow(StandIn):
    async def send(self, to, message):  # type: ignore[no-untyped-def]
        await asyncio.sleep(3.0)  # signal-cli answering slowly
        return await super().send(to, message)


async def test_a_p0_does_not_wait_for_passes_held_by_a_slow_channel(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """Both passes are sending a P3 roll-call through a slow channel (up to send_timeout_s,
    30 s, in production): a panic notice queued meanwhile goes at once on its own lane."""
    world = await build_world(sessions, vault, channel="fast", webhook_url=None)
    async with transaction(sessions) as s:
        members = [address(vault, "slow", f"member-{n}") for n in range(64)]
        s.add_all(members)
        await s.flush()
        roll_call = [
            Item("slow", int(Priority.P3), f"bc:{n}", Outbound(text="roll-call"), address_id=a.id)
            for n, a in enumerate(members)
        ]
        await enqueue_many(s, vault, roll_call, now=datetime.now(UTC))
    fast = StandIn("fast")
    d = Dispatcher(
        sessions, vault, {"slow": Slow("slow"), "fast": fast}, owner="t", limits={}, idle_s=0.05
    )
    task = asyncio.create_task(d.run())
    try:
        await asyncio.sleep(0.5)  # both passes are now sending the roll-call
        async with transaction(sessions) as s:
            responder = (
                await s.execute(
                    select(ChannelAddress).where(
                        ChannelAddress.responder_id == world.responder_ids[0]
                    )
                )
            ).scalar_one()
            notice = Outbound(text="PANIC")
            panic_notice = Item("fast", 0, "panic:1", notice, address_id=responder.id)
            await enqueue_many(s, vault, [panic_notice], now=datetime.now(UTC))
        started = time.monotonic()
        while not fast.sent and time.monotonic() - started < 10:
            await asyncio.sleep(0.02)
        assert fast.sent and time.monotonic() - started < 2.0  # not after a 3 s pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_long_rate_limit_brings_the_desk_forward_once_and_still_delivers(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    """A Signal rate limit is a wait (600 s), not a failure: past the notice's patience, with
    nobody else to try, the alert escalates as for an unreachable contact, once, while the
    notice keeps trying and arrives when the limit passes (review: it used to wait quietly,
    for up to a day, with nothing on the timeline)."""
    world = await standin_world(sessions, vault)
    main = StandIn("standin")
    limited = DeliveryError("rate limited", retry_after=600)
    for n in (0, 1):
        main.fail(f"c{n}-quiet-heron-41", limited, limited)
    async with transaction(world.sessions) as s:
        await checkins.arm_timer(s, defender=await world.defender(s), due_at=T0, now=T0 - 60 * SEC)
    sweep, d = Sweep(world.sessions, world.vault, owner="s"), dispatcher(world, {"standin": main})
    opened = T0 + 15 * 60 * SEC
    await sweep.run(opened)  # the alert opens: contacts are told …
    await d.drain(opened)  # … but their channel says: wait ten minutes
    await sweep.run(opened + SEC)  # so the desk is told now, not 15 minutes later
    await d.drain(opened + SEC)
    assert main.to("r0-quiet-heron-41")
    for k in (1, 2):  # the limit still holds at the first retry, then passes
        await d.drain(opened + k * 700 * SEC)
    assert main.to("c0-quiet-heron-41") and main.to("c1-quiet-heron-41")
    kinds = [e.kind for e in await timeline(world, await timeline_alert(world))]
    # Once each, though each was tried twice past its patience.
    assert kinds.count("recipient_unreachable") == 2 and "desk_brought_forward" in kinds


async def test_an_all_clear_waits_for_its_alarm_held_by_another_dispatcher(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    """Several workers share the queue: one holds a contact's alarm (claimed, not yet sent)
    when "I'm safe" queues the all-clear, which another claims. It waits for the alarm:
    "they are safe" never arrives before "they may need help"."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    first = Dispatcher(
        sessions, vault, {"standin": channel}, owner="a", limits={}, rng=lambda: 0.5
    )
    second = Dispatcher(
        sessions, vault, {"standin": channel}, owner="b", limits={}, rng=lambda: 0.5
    )
    async with transaction(sessions) as s:
        await alerts.raise_alert(
            s, vault, defender=await world.defender(s), kind=AlertKind.missed_checkin, now=T0
        )
    held = await first.claim(T0)  # the alarms, being sent (slowly) by the first worker
    assert held
    async with transaction(sessions) as s:  # "I'm safe" ten seconds later
        assert await checkins.check_in(
            s, vault, defender=await world.defender(s), now=T0 + 10 * SEC
        )
    await second.dispatch_once(T0 + 10 * SEC)  # the all-clears: held back
    assert channel.to("c1-quiet-heron-41") == []
    attempts = await first.send_all(held, T0 + 11 * SEC)
    async with transaction(sessions) as s:
        await record(s, vault, attempts, owner="a", now=T0 + 11 * SEC, rng=lambda: 0.5)
    await second.drain(T0 + 12 * SEC)
    alarm, all_clear = channel.to("c1-quiet-heron-41")
    assert not alarm.startswith("Bonne nouvelle") and all_clear.startswith("Bonne nouvelle")


async def test_a_short_retry_after_does_not_spend_a_webhooks_tries(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """An external desk's receiver rate-limiting in an alert storm (429 with "Retry-After:
    1"): the event still waits at least its backoff between tries, so its 16 tries last the
    usual hours, not half a minute (it was given up, dead, before the receiver recovered)."""
    world = await standin_world(sessions, vault)
    limited = Receiver(statuses=[429], headers={"Retry-After": "1"})
    async with limited as desk, webhooks.client() as http:
        await point_webhook_at(world, desk.url())
        await panic(world)
        d = dispatcher(world, {"standin": StandIn("standin")}, http)
        for n in range(40):
            await d.drain(T0 + n * 2 * SEC)
        async with world.sessions() as s:
            query = select(OutboxMessage).where(OutboxMessage.channel == "webhook")
            row = (await s.execute(query)).scalar_one()
    assert str(row.state) == "pending" and row.payload_enc is not None
    assert 1 < len(desk.hits) < 8  # tried again, never sooner than Retry-After nor backoff


async def test_a_message_given_up_on_keeps_no_text(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """A message to a person that could not be delivered in its tries (dead) is never sent
    again (only webhook events are replayed): its text is shredded as a delivered one's, not
    kept readable with the server's keys for 30 days, or for as long as its alert is open,
    "delete my data" or not. A webhook event given up on keeps its body, to be replayed."""
    world = await standin_world(sessions, vault)
    async with transaction(world.sessions) as s:
        mine = ChannelAddress.defender_id == world.defender_id
        target = (await s.execute(select(ChannelAddress).where(mine))).scalar_one()
        news = Outbound("the usual place, at nine")
        item = Item("standin", int(Priority.P3), "news:1", news, address_id=target.id)
        await enqueue_many(s, world.vault, [item], now=T0)
    main = StandIn("standin")
    main.fail("d-quiet-heron-41", *[DeliveryError("HTTP 502")] * 20)
    async with Receiver(statuses=[500]) as desk, webhooks.client() as http:
        await point_webhook_at(world, desk.url())
        await panic(world)
        d = dispatcher(world, {"standin": main}, http)
        for n in range(40):
            await d.drain(T0 + n * 10 * MIN)
    async with world.sessions() as s:
        row = (
            await s.execute(select(OutboxMessage).where(OutboxMessage.idempotency_key == "news:1"))
        ).scalar_one()
        hook = (
            await s.execute(select(OutboxMessage).where(OutboxMessage.channel == "webhook"))
        ).scalar_one()
    assert (str(row.state), row.attempts) == ("dead", 12)
    assert row.payload_enc is None and row.dek is None
    assert str(hook.state) == "dead" and hook.payload_enc is not None


async def test_a_long_retry_after_parks_a_webhook_event_an_hour_at_most(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    """A receiver answering 429 with "Retry-After: 864000" (ten days) would park the event
    unseen: neither delivered nor a dead letter the desk could replay. It is tried again
    within the one-hour cap, so a receiver that keeps refusing ends in the dead letters."""
    world = await standin_world(sessions, vault)
    parked = Receiver(statuses=[429], headers={"Retry-After": "864000"})
    async with parked as desk, webhooks.client() as http:
        await point_webhook_at(world, desk.url())
        await panic(world)
        await dispatcher(world, {"standin": StandIn("standin")}, http).drain(T0)
    async with world.sessions() as s:
        query = select(OutboxMessage).where(OutboxMessage.channel == "webhook")
        row = (await s.execute(query)).scalar_one()
    assert len(desk.hits) == 1 and str(row.state) == "pending"
    assert row.next_attempt_at <= T0 + timedelta(hours=1.1)
