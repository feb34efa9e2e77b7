"""A timer whose PIN is confirmed late: a duration counts from the confirmation, a clock
time gone by meanwhile is asked again (never a deadline already past). Both backends."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from core.models import CheckIn, CheckInState
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Pick, onboard


async def live(desk: Desk) -> list[datetime]:
    async with desk.sessions() as s:
        query = select(CheckIn.due_at).where(CheckIn.state == CheckInState.armed)
        return [d.replace(tzinfo=UTC) for d in (await s.execute(query)).scalars()]


async def pin_asked(chat: Chat, *said: str | Pick) -> None:
    """A timer is running (due 15:30 UTC); a later one takes the PIN."""
    await chat.say("/checkin")
    await chat.say(Pick("30m"))
    chat.desk.clock.advance(minutes=5)
    await chat.say("/checkin")
    for each in said:
        reply = await chat.text(each)
    assert "Send your PIN to confirm." in reply


async def late(desk: Desk, minutes: int, *chats: Chat) -> None:
    """The PIN question stays open meanwhile: each message in time keeps it (30 min)."""
    for _ in range(minutes // 20):
        desk.clock.advance(minutes=20)
        for chat in chats:
            assert "4 to 8 digits" in await chat.text("wait")


async def test_a_duration_counts_from_the_pins_confirmation(desk: Desk) -> None:
    """Review: "in 2 hours", confirmed two hours later, set the deadline two hours after the
    request: already due, and escalating at once."""
    alice = await onboard(desk)
    await pin_asked(alice, Pick("2h"))
    await late(desk, 120, alice)
    assert "Timer set" in await alice.text(CANCEL_PIN)
    assert await live(desk) == [datetime(2026, 5, 4, 19, 5, tzinfo=UTC)]  # 17:05 + 2 h


async def test_a_typed_duration_too(desk: Desk) -> None:
    alice = await onboard(desk)
    await pin_asked(alice, Pick("custom"), "in 45 minutes")
    await late(desk, 60, alice)
    assert "Timer set" in await alice.text(CANCEL_PIN)
    assert await live(desk) == [datetime(2026, 5, 4, 16, 50, tzinfo=UTC)]  # 16:05 + 45 min


async def test_a_clock_time_gone_by_is_asked_again(desk: Desk) -> None:
    """10:05 in Bogotá: "at 11:00", confirmed at 11:05: the time has passed, the timer
    running stays as it was, and the question comes again; the duress PIN reads the same."""
    calm, forced = await onboard(desk, "calm"), await onboard(desk, "forced")
    for chat in (calm, forced):
        await pin_asked(chat, Pick("custom"), "at 11:00")
    await late(desk, 60, calm, forced)
    real, made = await calm.say(CANCEL_PIN), await forced.say(DURESS_PIN)
    assert [r.text for r in real] == [r.text for r in made]
    assert "That time has passed." in real[0].text
    assert "How long, or until when?" in real[0].text
    running = [datetime(2026, 5, 4, 15, 30, tzinfo=UTC), datetime(2026, 5, 4, 15, 35, tzinfo=UTC)]
    assert sorted(await live(desk)) == running  # calm's and forced's, as they were
    assert "Send your PIN to confirm." in await calm.text("at 12:00")
    assert "Timer set" in await calm.text(CANCEL_PIN)
    assert datetime(2026, 5, 4, 17, 0, tzinfo=UTC) in await live(desk)
