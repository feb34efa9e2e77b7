"""Help and the menu: from any state, in the defender's language, without the alert button
in discreet mode."""

from __future__ import annotations

from tests.flows.conftest import Desk, Pick, onboard, run_dialog


async def test_it_runs_a_help_dialog_in_english(desk: Desk) -> None:
    alice = await onboard(desk)
    await run_dialog(
        alice,
        [
            ("menu", "What would you like to do?"),
            (Pick("menu:help"), "/alert: tell your contacts and the desk you need help now"),
            ("/safety", "Telegram does not encrypt chats with us end to end; Signal does."),
            ("/checkin", "Check-ins"),
            ("?", "You can carry on where you were:"),
            ("stop", "Stopped."),
        ],
    )


async def test_it_runs_a_help_dialog_in_arabic(desk: Desk) -> None:
    layla = await onboard(desk, "layla", language="ar")
    await run_dialog(
        layla,
        [
            ("القائمة", "ماذا تريد أن تفعل؟"),
            ("مساعدة", "إليك ما يمكنك إرساله:"),
            ("/safety", "لا يشفّر تيليغرام المحادثات معنا"),
            ("/weather", "عذرًا، لم أفهم ذلك."),
        ],
    )


async def test_it_explains_telegram_to_telegram_users(desk: Desk) -> None:
    chat = desk.chat("tg")
    chat.channel = "telegram"
    await chat.say(await desk.invite())
    briefing = await chat.text(Pick("lang:en"))
    assert "Telegram does not encrypt this chat end to end" in briefing
    assert "Signal encrypts messages end to end" in briefing
