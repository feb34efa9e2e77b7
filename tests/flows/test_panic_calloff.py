"""An open alert can be called off from the phone however long ago it was raised: the panic
conversation closes after a day's silence (panic.TTL), the alert does not. Both backends."""

from __future__ import annotations

from sqlalchemy import select, update

from core import alert_handling
from core.db import transaction
from core.dispatch import Dispatcher
from core.messages import Outbound
from core.models import Alert, AlertEvent, AlertKind, AlertState, OutboxMessage, OutboxState
from core.ratelimit import Limit
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Pick, onboard


async def states(desk: Desk) -> list[tuple[AlertKind, AlertState]]:
    async with desk.sessions() as s:
        found = (await s.execute(select(Alert).order_by(Alert.created_at))).scalars()
        return [(a.kind, a.state) for a in found]


async def raised(desk: Desk, address: str = "alice") -> Chat:
    chat = await onboard(desk, address)
    await chat.say("/alert")
    await chat.say(Pick("skip"))
    await chat.say(Pick("no"))
    return chat


async def test_it_calls_off_an_alert_raised_more_than_a_day_ago(desk: Desk) -> None:
    """Review: after 24 h "cancel" got the menu and the PIN "Sorry, I didn't understand
    that": the alert could no longer be called off from the phone."""
    alice = await raised(desk)
    desk.clock.advance(hours=25)  # the conversation closed after a long silence
    asked = await alice.text("cancel")
    assert "Send your PIN to call off the alert." in asked
    assert "Alert called off." in await alice.text(CANCEL_PIN)
    assert await states(desk) == [(AlertKind.panic, AlertState.resolved)]


async def test_the_pin_alone_calls_it_off_and_the_duress_pin_looks_the_same(desk: Desk) -> None:
    calm, forced = await raised(desk, "calm"), await raised(desk, "forced")
    desk.clock.advance(days=3)
    await calm.say("hello")  # "closed after a long silence": the same on both phones
    await forced.say("hello")
    real = await calm.say(CANCEL_PIN)
    made = await forced.say(DURESS_PIN)
    assert "Alert called off." in real[0].text
    assert real == made  # byte for byte: whoever holds the phone cannot tell
    found = sorted((str(k), str(s)) for k, s in await states(desk))
    assert found == [("duress", "triggered"), ("panic", "resolved"), ("panic", "triggered")]
    for said in ("cancel", CANCEL_PIN, Pick("calloff"), DURESS_PIN):  # nothing tells after
        assert [r.text for r in await calm.say(said)] == [r.text for r in await forced.say(said)]


async def test_after_the_duress_pin_cancel_shows_no_alert_still_on(desk: Desk) -> None:
    """The duress PIN "called off" the alert (it stays on, silently): a day later, "cancel"
    and the PIN get what they get with no alert on, as on the phone whose alert was called
    off; and so does "cancel" while a duress alert is open."""
    calm, forced = await raised(desk, "calm"), await raised(desk, "forced")
    for chat, pin in ((calm, CANCEL_PIN), (forced, DURESS_PIN)):
        await chat.say(Pick("calloff"))
        await chat.say(pin)
    desk.clock.advance(hours=25)
    for said in ("cancel", CANCEL_PIN, "cancel", DURESS_PIN, "cancel"):
        assert [r.text for r in await calm.say(said)] == [r.text for r in await forced.say(said)]
    async with desk.sessions() as s:
        (panic,) = (
            await s.execute(
                select(Alert).where(Alert.kind == AlertKind.panic, Alert.open_key.is_not(None))
            )
        ).scalars()
        ignored = await s.execute(
            select(AlertEvent.actor).where(
                AlertEvent.alert_id == panic.id, AlertEvent.kind == "cancel_ignored"
            )
        )
        assert list(ignored.scalars()) == ["defender"]  # the desk's timeline says so


async def test_with_no_alert_open_nothing_changes(desk: Desk) -> None:
    """Called off already (or closed by the desk): cancel and a PIN get what they got."""
    alice = await raised(desk)
    desk.clock.advance(hours=25)  # the conversation closed after a long silence
    await alice.say("cancel")
    await alice.say(CANCEL_PIN)
    assert "Send your PIN" not in await alice.text("cancel")
    assert "Alert called off" not in await alice.text(CANCEL_PIN)


async def resolve_open(desk: Desk) -> None:
    """A responder resolves every open panic alert in the dashboard."""
    async with transaction(desk.sessions) as s:
        query = select(Alert).where(Alert.kind == AlertKind.panic, Alert.open_key.is_not(None))
        for alert in (await s.execute(query)).scalars().all():
            done = await alert_handling.resolve(
                s, desk.vault, alert=alert, outcome="safe", actor="responder:r", now=desk.clock.now
            )
            assert done


def shown(replies: list[Outbound]) -> list[tuple[str, list[str], bool]]:
    """What the screen shows: the text, the buttons, whether it is sensitive."""
    return [(r.text, [c.key for c in r.choices], r.sensitive) for r in replies]


async def test_once_the_desk_resolved_the_alert_nothing_is_in_progress(desk: Desk) -> None:
    """Review: the desk resolved the alert while the defender's chat was at the call-off
    step; "cancel" still got "The alert stays on until you call it off with your PIN", and
    the PIN "Alert called off. Everyone who was told will hear it was a false alarm." Now
    both get what they get with no alert in progress, the same on both PINs (R8)."""
    calm, forced = await raised(desk, "calm"), await raised(desk, "forced")
    other = await onboard(desk, "other")  # never raised an alert
    await resolve_open(desk)
    for said in ("cancel", Pick("calloff"), "they left"):
        again = shown(await calm.say(said))
        assert again == shown(await other.say(said)) == shown(await forced.say(said)), said
    real, made = await calm.say(CANCEL_PIN), await forced.say(DURESS_PIN)
    assert "Alert called off" not in real[0].text
    assert real == made  # byte for byte: text, buttons, deletions
    assert shown(real) == shown(await other.say(CANCEL_PIN))
    assert sorted((str(k), str(s)) for k, s in await states(desk)) == [
        ("duress", "triggered"),  # the duress PIN still raises its silent alert
        ("panic", "resolved"),
        ("panic", "resolved"),
    ]


async def test_the_pin_asked_for_before_the_desk_resolved_calls_nothing_off(desk: Desk) -> None:
    calm, forced = await raised(desk, "calm"), await raised(desk, "forced")
    other = await onboard(desk, "other")
    for chat in (calm, forced):
        assert "Send your PIN" in await chat.text(Pick("calloff"))
    await resolve_open(desk)
    real, made = await calm.say(CANCEL_PIN), await forced.say(DURESS_PIN)
    assert real == made and "Alert called off" not in real[0].text
    assert shown(real) == shown(await other.say(CANCEL_PIN))
    async with desk.sessions() as s:
        events = await s.execute(select(AlertEvent.kind).where(AlertEvent.actor == "defender"))
        assert "cancel_ignored" not in set(events.scalars())


async def test_in_discreet_mode_a_resolved_alert_shows_as_none_too(desk: Desk) -> None:
    calm, other = await onboard(desk, "calm"), await onboard(desk, "other")
    for chat in (calm, other):
        for said in ("/settings", Pick("discreet"), Pick("on"), Pick("1m")):
            await chat.say(said)
    await calm.say("/sos")
    await resolve_open(desk)
    for said in ("cancel", "hello", CANCEL_PIN):
        assert shown(await calm.say(said)) == shown(await other.say(said)), said
    assert [str(s) for _k, s in await states(desk)] == ["resolved"]


async def test_im_safe_typed_while_the_alert_is_on_asks_for_the_pin_that_calls_it_off(
    desk: Desk,
) -> None:
    """Walk-through: "estoy bien" typed at "Can you talk?" became a note for the desk, and the
    alert went on escalating while the defender thought it was over. Typed alone, "I'm safe"
    in any of our languages now leads to the PIN, at every question of the alert; more words
    are still a note."""
    ask = "Send your PIN to call off the alert."
    for name, said_at in (("at-location", ()), ("at-talk", (Pick("skip"),))):
        chat = await onboard(desk, name)
        for said in ("/alert", *said_at):
            await chat.say(said)
        assert await chat.text("estoy bien") == ask
        assert "Alert called off." in await chat.text(CANCEL_PIN)
    held = await raised(desk, "at-hold")
    assert await held.text("Je vais bien") == ask
    assert "Alert called off." in await held.text(CANCEL_PIN)
    noted = await onboard(desk, "noted")
    for said in ("/alert", Pick("skip")):
        await noted.say(said)
    assert "added to the alert" in await noted.text("I'm safe now but they took my laptop")
    kinds = sorted((str(k), str(s)) for k, s in await states(desk))
    assert kinds.count(("panic", "resolved")) == 3 and ("panic", "triggered") in kinds


async def contacts_of(desk: Desk, chat: Chat, n: int) -> None:
    """``n`` trusted contacts of ``chat``'s defender, each in a chat of their own."""
    for i in range(n):
        await chat.say("/settings")
        await chat.say(Pick("contacts"))
        await chat.say(Pick("add"))
        await chat.say(CANCEL_PIN)
        shown = await chat.say(f"friend {i}")
        code = shown[0].text.split("in person or by phone: ")[1].split("\n")[0]
        friend = desk.chat(f"{chat.address}-friend-{i}")
        await friend.say(code)
        await friend.say(Pick("accept"))


async def test_either_pin_is_answered_before_the_notices_it_queues(desk: Desk) -> None:
    """R8, "at similar latency": the duress PIN queues P0 notices to the desk and contacts
    and the cancel PIN all-clears, on the phone's own channel too. A channel sends only so
    many at once (Signal: 10 a second), so behind them the phone's answer would come later
    the more people are told. Here the channel takes one message a pass: the first is the
    phone's answer, after either PIN."""
    async with transaction(desk.sessions) as s:  # what onboarding and the alerts queued: sent
        await s.execute(update(OutboxMessage).values(state=OutboxState.delivered))
    one_a_pass = {"console": Limit(per_channel=1.0, per_recipient=None)}
    for who, typed in (("calm", CANCEL_PIN), ("forced", DURESS_PIN)):
        chat = await onboard(desk, who)
        await contacts_of(desk, chat, 3)
        await raised_by(chat)
        assert "Send your PIN" in await chat.text(Pick("calloff"))
        async with transaction(desk.sessions) as s:
            await s.execute(update(OutboxMessage).values(state=OutboxState.delivered))
        await chat.say(typed)
        async with desk.sessions() as s:
            waiting = await s.execute(
                select(OutboxMessage.recipient).where(OutboxMessage.state == OutboxState.pending)
            )
            told = sorted(r or "" for r in waiting.scalars())
        assert told.count("defender") == 1 and len(told) >= 4, told  # three contacts too
        dispatcher = Dispatcher(
            desk.sessions, desk.vault, {}, owner="t", limits=one_a_pass, rng=lambda: 0.5
        )
        dispatcher.names = ["console"]
        (first,) = await dispatcher.claim(desk.clock.now)
        assert first.to is not None and first.to.value == who, typed
        async with transaction(desk.sessions) as s:
            await s.execute(update(OutboxMessage).values(state=OutboxState.delivered))


async def raised_by(chat: Chat) -> None:
    await chat.say("/alert")
    await chat.say(Pick("skip"))
    await chat.say(Pick("no"))
