"""An alarm being sent when the alert closes is never retried, nor sent elsewhere, after the
all-clear: the check-in could not withdraw it (it was not waiting), so its send's failure does."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from core import alert_handling, alerts, checkins
from core.db import transaction
from core.dispatch import Dispatcher
from core.messages import DeliveryError
from core.models import AlertKind, OutboxMessage
from core.ratelimit import Limit, Spacing
from tests.engine.conftest import T0, World, alert_of, build_world
from tests.engine.standin import StandIn
from tests.engine.test_dispatch import dispatcher, panic, standin_world

SEC = timedelta(seconds=1)


async def missed(world: World) -> None:
    async with transaction(world.sessions) as s:
        defender = await world.defender(s)
        await alerts.raise_alert(
            s, world.vault, defender=defender, kind=AlertKind.missed_checkin, now=T0
        )


async def safe(world: World) -> None:
    async with transaction(world.sessions) as s:  # "I'm safe" while the sends are under way
        assert await checkins.check_in(s, world.vault, defender=await world.defender(s), now=T0)


async def withdrawn(world: World) -> int:
    async with world.sessions() as s:
        rows = (await s.execute(select(OutboxMessage.last_error))).scalars()
        return sum(1 for e in rows if e == "withdrawn")


async def test_a_contacts_alarm_rate_limited_in_flight_is_not_retried(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    d = dispatcher(world, {"standin": channel})
    await missed(world)
    jobs = await d.claim(T0)  # being sent …
    await safe(world)  # … when the defender checks in
    channel.fail("c0-quiet-heron-41", DeliveryError("Too Many Requests", retry_after=30))
    await d._deliver(jobs, T0)  # the send to contact 0 answers 429
    for at in (2, 60, 600):
        await d.drain(T0 + at * SEC)
    [told] = channel.to("c0-quiet-heron-41")  # the all-clear, and no alarm after it
    assert told.startswith("Buenas noticias")
    _alarm, all_clear = channel.to("c1-quiet-heron-41")  # contact 1 got both, in order
    assert all_clear.startswith("Bonne nouvelle")
    assert await withdrawn(world) == 1


async def test_a_contacts_alarm_deferred_in_flight_is_not_sent_later(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    limits = {"standin": Limit(per_channel=None, per_recipient=0.1)}  # ten seconds apart
    d = Dispatcher(sessions, vault, {"standin": channel}, owner="t", limits=limits)
    ticks = [0.0]
    d.spacing["standin"] = Spacing(0.1, clock=lambda: ticks[0])
    await missed(world)
    jobs = await d.claim(T0)
    [contact0] = [j for j in jobs if j.to is not None and j.to.value == "c0-quiet-heron-41"]
    assert d.spacing["standin"].wait(contact0.address_id) == 0.0  # a message just went there
    await safe(world)
    await d._deliver(jobs, T0)  # contact 0: deferred ten seconds, not sent
    assert channel.to("c0-quiet-heron-41") == []
    for at in (2, 60, 600):
        ticks[0] += 100.0
        await d.drain(T0 + at * SEC)
    [told] = channel.to("c0-quiet-heron-41")
    assert told.startswith("Buenas noticias")


async def test_a_desk_notice_blocked_in_flight_does_not_fall_back(sessions, vault) -> None:  # type: ignore[no-untyped-def]
    world = await standin_world(sessions, vault)  # responder 0 also has a "backup" chat
    main, backup = StandIn("standin"), StandIn("backup")
    d = Dispatcher(sessions, vault, {"standin": main, "backup": backup}, owner="t", limits={})
    await panic(world)
    jobs = await d.claim(T0)
    alert = await alert_of(world)
    assert alert is not None
    async with transaction(sessions) as s:  # a false alarm, cancelled during the send
        await alert_handling.cancel_alert(s, vault, alert=alert, now=T0 + SEC)
    main.fail("r0-quiet-heron-41", DeliveryError("Forbidden", permanent=True))
    await d._deliver(jobs, T0)
    for at in (2, 60):
        await d.drain(T0 + at * SEC)
    alarm = next(t for a, t in main.calls if a == "r0-quiet-heron-41")
    assert alarm not in [t for _a, t in backup.calls]  # not on r0's other chat
    assert [t for _a, t in main.calls].count(alarm) == 1  # nor to another responder
    assert await withdrawn(world) == 0  # failed for good: its own error stays on the row


async def test_a_contacts_alarm_deferred_before_the_check_in_is_not_sent_after_the_all_clear(
    sessions, vault
) -> None:  # type: ignore[no-untyped-def]
    """The alarm was deferred by the contact's rate limit (not an attempt: it is waiting,
    untried) and the check-in comes while it waits: the all-clear, due at once, would go
    first, and "may need help" would follow "they are safe"."""
    world = await build_world(sessions, vault, channel="standin", webhook_url=None)
    channel = StandIn("standin")
    limits = {"standin": Limit(per_channel=None, per_recipient=0.1)}  # ten seconds apart
    d = Dispatcher(sessions, vault, {"standin": channel}, owner="t", limits=limits)
    ticks = [0.0]
    d.spacing["standin"] = Spacing(0.1, clock=lambda: ticks[0])
    await missed(world)
    jobs = await d.claim(T0)
    [contact0] = [j for j in jobs if j.to is not None and j.to.value == "c0-quiet-heron-41"]
    assert d.spacing["standin"].wait(contact0.address_id) == 0.0  # a message just went there
    await d._deliver(jobs, T0)  # contact 0: deferred ten seconds, waiting untried
    assert channel.to("c0-quiet-heron-41") == []
    await safe(world)  # … when the defender checks in
    for at in (2, 60, 600):
        ticks[0] += 100.0
        await d.drain(T0 + at * SEC)
    told = channel.to("c0-quiet-heron-41")
    assert told[-1].startswith("Buenas noticias"), told  # nothing after the all-clear
