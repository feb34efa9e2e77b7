"""R8 in settings: whoever holds the unlocked phone, forced to use the duress PIN, sees exactly
what the real PIN shows, and can neither tell them apart afterwards nor weaken the defender's
protection (a contact of their own, a PIN, the code phrases, discreet mode)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from core import security
from core.messages import Outbound
from core.models import Alert, AlertKind
from tests.flows.conftest import CANCEL_PIN, DURESS_PIN, Chat, Desk, Pick, Said, onboard
from tests.flows.test_panic import alerts

CODE = re.compile(r"(in person or by phone: )\S+")
HANDLE = re.compile(r"(you are called )\S+\.")  # each defender's own (flows.setup.called)


def shown(messages: list[Outbound]) -> list[dict[str, Any]]:
    """What the phone shows (text, buttons, deletions…), the random invite code and the
    defender's handle masked."""
    out = []
    for m in messages:
        data = m.to_json()
        data["text"] = HANDLE.sub(r"\1<handle>.", CODE.sub(r"\1<code>", data["text"]))
        out.append(data)
    return out


async def dialog(chat: Chat, said: list[Said]) -> list[list[dict[str, Any]]]:
    return [shown(await chat.say(s)) for s in said]


async def _add_contact(defender: Chat, contact: Chat, pin: str) -> list[list[dict[str, Any]]]:
    """The defender's phone adds ``contact`` with ``pin``; the contact redeems and accepts."""
    seen = await dialog(defender, ["/settings", Pick("contacts"), Pick("add"), pin])
    replies = await defender.say("friend")
    code = replies[0].text.split("in person or by phone: ")[1].split("\n")[0]
    seen.append(shown(replies))
    assert "accept" in (await contact.text(code)).lower()
    await contact.say(Pick("accept"))
    seen.append(shown(await defender.received()))  # "A contact accepted. You now have…"
    seen += await dialog(defender, ["/settings", Pick("contacts")])
    return seen


async def test_a_contact_added_under_duress_is_never_told_anything(desk: Desk) -> None:
    alice, bob = await onboard(desk, "alice"), await onboard(desk, "bob")
    friend, captor = desk.chat("friend"), desk.chat("captor")
    real = await _add_contact(alice, friend, CANCEL_PIN)
    forced = await _add_contact(bob, captor, DURESS_PIN)
    assert real == forced
    assert "You have 1 confirmed contact." in str(forced[-1])
    assert (await friend.text("hello")) == (await captor.text("hello"))  # "You are a contact"
    await friend.received(), await captor.received()
    for chat in (alice, bob):  # forced "/safe" with the duress PIN, then a panic
        assert (await chat.text("/safe")) and (await chat.text(DURESS_PIN))
    real_heard = await friend.received()
    assert any("may need help" in m.text for m in real_heard), real_heard
    assert await captor.received() == []
    await alice.say("/sos"), await bob.say("/sos")
    assert await friend.received()
    assert await captor.received() == []


async def test_adding_a_contact_takes_the_pin(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("/settings", Pick("contacts")):
        await alice.say(said)
    assert "Send your PIN first." in await alice.text(Pick("add"))
    assert "That PIN is not right." in await alice.text("5827")


async def _change_then_use(desk: Desk, name: str, current: str, which: str) -> list[Any]:
    chat = await onboard(desk, name)
    said: list[Said] = ["/settings", Pick("pins"), current, Pick(which), "5827", "5827"]
    # then the new PIN, and the one they gave as the current one, where a PIN is asked
    return await dialog(chat, [*said, "/safe", "5827", "/safe", current])


async def test_a_pin_changed_under_duress_works_later_as_the_new_pin_would(desk: Desk) -> None:
    for which in ("cancel", "duress"):
        real = await _change_then_use(desk, f"real-{which}", CANCEL_PIN, which)
        forced = await _change_then_use(desk, f"forced-{which}", DURESS_PIN, which)
        assert real == forced, which
        assert "Thank you. We noted that you are safe." in str(forced[7]), which


async def test_the_real_pin_still_works_after_a_forced_change(desk: Desk) -> None:
    alice = await onboard(desk)
    for said in ("/settings", Pick("pins"), DURESS_PIN, Pick("duress"), "5827", "5827"):
        await alice.say(said)
    await alice.say("/safe")
    assert "noted that you are safe" in await alice.text(CANCEL_PIN)
    await alice.say("/safe")
    assert "That PIN is not right." in await alice.text("4444")  # the count was reset
    defender = await alice.defender()
    assert defender is not None and defender.failed_pins == 1


PHRASE = "Is the bakery open?"


async def _with_phrase(desk: Desk, name: str) -> Chat:
    chat = await onboard(desk, name)
    for said in ("/settings", Pick("phrases"), CANCEL_PIN, Pick("alert_phrase"), PHRASE):
        await chat.say(said)
    return chat


async def _raises_alert(desk: Desk, chat: Chat) -> bool:
    before = len(await alerts(desk))
    await chat.say(PHRASE)
    return len(await alerts(desk)) > before


async def test_the_code_phrases_change_only_with_the_real_pin(desk: Desk) -> None:
    calm, forced = await _with_phrase(desk, "calm"), await _with_phrase(desk, "forced")
    for chat in (calm, forced):
        assert "That PIN is not right." in str(
            await dialog(chat, ["/settings", Pick("phrases"), "5827"])
        )
        await chat.say("/cancel")
    real = await dialog(calm, ["/settings", Pick("phrases"), CANCEL_PIN, Pick("remove")])
    fake = await dialog(forced, ["/settings", Pick("phrases"), DURESS_PIN, Pick("remove")])
    assert real == fake and "Code phrases removed." in str(fake)
    new = [Pick("alert_phrase"), "Is the river high?"]
    assert await dialog(calm, ["/settings", Pick("phrases"), CANCEL_PIN, *new]) == await dialog(
        forced, ["/settings", Pick("phrases"), DURESS_PIN, *new]
    )
    assert not await _raises_alert(desk, calm)  # really removed, then replaced
    async with desk.sessions() as s:  # the forced one raised only the silent duress alert
        kinds = [a.kind for a in (await s.execute(select(Alert))).scalars()]
    assert kinds == [AlertKind.duress]
    assert await _raises_alert(desk, forced)  # the forced one still alerts with it


async def test_discreet_mode_goes_off_only_with_the_real_pin(desk: Desk) -> None:
    chats = {}
    for name in ("calm", "forced"):
        chats[name] = await onboard(desk, name)
        for said in ("/settings", Pick("discreet"), Pick("on"), Pick("10m")):
            await chats[name].say(said)
    off: list[Said] = ["/settings", Pick("discreet"), Pick("off")]
    for chat in chats.values():
        assert "Send your PIN first." in str(await dialog(chat, off))
        assert "That PIN is not right." in str(await dialog(chat, ["5827"]))
        await chat.say("/cancel")
    real = await dialog(chats["calm"], [*off, CANCEL_PIN])
    fake = await dialog(chats["forced"], [*off, DURESS_PIN])
    assert real == fake and "Discreet mode is off." in str(fake)
    calm, forced = await chats["calm"].defender(), await chats["forced"].defender()
    assert calm is not None and not calm.discreet
    assert forced is not None and forced.discreet


class CountingHasher:
    """Counts the Argon2id hashes and checks around the real (fast, test) hasher."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, {"hash": 0, "verify": 0}

    def hash(self, *args: Any) -> Any:
        self.calls["hash"] += 1
        return self.inner.hash(*args)

    def verify(self, *args: Any) -> Any:
        self.calls["verify"] += 1
        return self.inner.verify(*args)


async def _argon2_runs(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, name: str, current: str, which: str
) -> list[dict[str, int]]:
    chat = await onboard(desk, name)
    runs = []
    for said in ("/settings", Pick("pins"), current, Pick(which), "5827", "5827"):
        counter = CountingHasher(security._hasher)
        with monkeypatch.context() as patch:
            patch.setattr(security, "_hasher", counter)
            await chat.say(said)
        runs.append(counter.calls)
    return runs


async def test_a_pin_change_runs_as_many_argon2_steps_under_duress(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    for which in ("cancel", "duress"):
        real = await _argon2_runs(desk, monkeypatch, f"real-{which}", CANCEL_PIN, which)
        forced = await _argon2_runs(desk, monkeypatch, f"forced-{which}", DURESS_PIN, which)
        assert real == forced, which
        assert sum(step["hash"] for step in real) == 1, which  # the new PIN's hash


async def test_under_the_duress_pin_a_phrase_tells_nothing_of_the_real_pin(desk: Desk) -> None:
    """Whoever typed the duress PIN may try phrases holding their guesses: one holding the
    real PIN is answered as one holding any other number, and the duress PIN they typed is
    refused as the real PIN is with the real PIN."""
    calm, forced = await _with_phrase(desk, "calm"), await _with_phrase(desk, "forced")
    ask = ["/settings", Pick("phrases"), Pick("alert_phrase")]
    other = await dialog(calm, [*ask[:2], CANCEL_PIN, ask[2], "Is the bakery open at 5827?"])
    guess = await dialog(
        forced, [*ask[:2], DURESS_PIN, ask[2], f"Is the bakery open at {CANCEL_PIN}?"]
    )
    assert other == guess and "Saved." in str(guess)
    for chat in (calm, forced):
        await chat.say("/cancel")
    own = await dialog(calm, [*ask[:2], CANCEL_PIN, ask[2], f"Open at {CANCEL_PIN}?"])
    typed = await dialog(forced, [*ask[:2], DURESS_PIN, ask[2], f"Open at {DURESS_PIN}?"])
    assert own == typed and "without your PIN" in str(typed)
