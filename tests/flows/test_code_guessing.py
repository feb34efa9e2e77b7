"""Codes typed into the bot (invites, contacts' and desk link codes) cannot be guessed: after
CODE_TRIES wrong ones in an hour, a chat gets for every code what a wrong one gets (R21,
abuse cases 14 and 19). Both backends."""

from __future__ import annotations

from core.security import generate_code
from flows.router_codes import CODE_TRIES
from tests.flows.conftest import CANCEL_PIN, Desk, Pick, onboard


async def test_a_chat_that_keeps_guessing_codes_is_refused_even_the_right_one(
    desk: Desk,
) -> None:
    guesser = desk.chat("guesser")
    wrong = [await guesser.text(generate_code(8)) for _ in range(CODE_TRIES)]
    assert len(set(wrong)) == 1
    real = await desk.invite()
    assert await guesser.text(real) == wrong[0]  # right, but after too many wrong ones
    assert await guesser.defender() is None
    assert await guesser.text(f"/desk {generate_code(8)}") == wrong[0]
    desk.clock.advance(hours=1, seconds=1)  # the window has passed: codes work again
    assert "Welcome" in await guesser.text(real)
    assert await guesser.defender() is not None


async def test_one_chat_guessing_leaves_other_chats_alone(desk: Desk) -> None:
    guesser = desk.chat("guesser")
    for _ in range(CODE_TRIES + 2):
        await guesser.say(generate_code(8))
    honest = desk.chat("honest")
    assert "Welcome" in await honest.text(await desk.invite())
    mistyped = desk.chat("mistyped")
    for _ in range(CODE_TRIES - 1):  # a person mistyping, short of the limit
        await mistyped.say(generate_code(8))
    assert "Welcome" in await mistyped.text(await desk.invite())


async def test_words_are_not_taken_for_codes_nor_counted_as_guesses(desk: Desk) -> None:
    """Two four-letter words, or one of eight letters, looked like a code ("stay safe" read
    as "STAY-SAFE"): a newcomer chatting before sending their invite, or a defender writing in
    an idle chat, used up the hour's tries and was refused their real code. A word holding a
    letter no code has (i, l, o; nor 0 or 1) is only a message."""
    newcomer = desk.chat("newcomer")
    for said in ("good luck", "hola hola", "question", "hi, is this the help line?") * 3:
        await newcomer.say(said)
    assert "Which language do you prefer?" in await newcomer.text(await desk.invite())
    alice, bob = await onboard(desk, "alice"), await onboard(desk, "bob")
    for _ in range(CODE_TRIES + 1):  # in bob's idle chat
        await bob.say("lots love")
    for said in ("/settings", Pick("contacts"), Pick("add"), CANCEL_PIN):
        await alice.say(said)
    code = (await alice.text("Bob")).split("in person or by phone: ")[1].split("\n")[0]
    assert "Do you accept?" in await bob.text(code)  # bob becomes alice's contact
