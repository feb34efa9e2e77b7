"""Onboarding: from a desk's invite code to a defender who can raise an alert and check in.

    invite code --> language --> briefing (what Telegram and Signal protect) --> cancel PIN
    --> again --> duress PIN --> again --> setup:zone --> setup:contacts --> setup:routine
    --> setup:alert_phrase --> setup:safe_phrase --> done (status active)

An alert works from the first message after the code, PINs or not. Left half-way, onboarding
expires like any conversation; the next message resumes at the first step not yet done.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from core import pins
from core.defenders import enrol, take_invite
from core.i18n import SUPPORTED, negotiate
from core.messages import Choice
from core.models import DefenderStatus
from core.text import fold
from flows import help, setup
from flows.context import Context, Retry

NAME = "onboarding"
TTL = timedelta(days=2)
LANGUAGES = {
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "pt": "Português",
    "ar": "العربية",
}


async def redeem(ctx: Context, code: str) -> tuple[str, str] | None:
    """A desk's invite code: a new defender, asked for a language. None if no such code.
    A responder's linked chat is not made a defender's too (the invite stays unused): desk
    pages, duress ones included, would reach the defender's own device."""
    if ctx.address.responder_id is not None:
        return None
    invite = await take_invite(ctx.session, ctx.vault, purpose="defender", code=code, now=ctx.now)
    if invite is None:
        return None
    locale = negotiate([ctx.inbound.language])
    ctx.defender = await enrol(ctx.session, invite=invite, address=ctx.address, locale=locale)
    ctx.data = {}
    ctx.forget_message()
    ctx.say(ctx._("Welcome. Let's set things up; it takes a few minutes."))
    ask_language(ctx)
    return NAME, "language"


def ask_language(ctx: Context) -> None:
    ctx.ask(
        ctx._("Which language do you prefer?"),
        tuple(Choice(f"lang:{code}", name) for code, name in LANGUAGES.items()),
    )


# What else people call them, in our languages (folded): "عربي" more than "العربية".
NAMES = {
    "en": ("english", "ingles", "anglais", "انجليزي", "الانجليزية"),
    "es": ("spanish", "castellano", "espagnol", "espanhol", "اسباني", "الاسبانية"),
    "fr": ("french", "frances", "فرنسي", "الفرنسية"),
    "pt": ("portuguese", "portugues", "portugais", "برتغالي", "البرتغالية"),
    "ar": ("arabic", "arabe", "عربي", "عربى", "العربيه"),
}


def pick_language(ctx: Context) -> str:
    """A language from a button, a number, its name (also as NAMES has it) or its code."""
    if ctx.inbound.choice and ctx.inbound.choice.removeprefix("lang:") in SUPPORTED:
        return ctx.inbound.choice.removeprefix("lang:")
    typed = fold(ctx.inbound.text or "")
    for code, name in LANGUAGES.items():
        if typed in (code, fold(name)) or typed in {fold(n) for n in NAMES[code]}:
            return code
    return ctx.need_choice(*(f"lang:{code}" for code in LANGUAGES)).removeprefix("lang:")


async def resume(ctx: Context) -> str:
    assert ctx.defender is not None
    ctx.say(ctx._("Let's finish setting up."))
    if ctx.defender.cancel_pin_hash is None or ctx.defender.duress_pin_hash is None:
        ask_language(ctx)
        return "language"
    return setup.ask_zone(ctx, chain=True)


async def language(ctx: Context) -> str:
    assert ctx.defender is not None
    ctx.defender.locale = pick_language(ctx)
    ctx.ask(help.briefing(ctx), (Choice("continue", ctx._("I understand")),))
    return "briefing"


async def briefing(ctx: Context) -> str:
    ask_cancel_pin(ctx)
    return "cancel_pin"


def ask_cancel_pin(ctx: Context) -> None:
    ctx.ask(
        ctx._(
            "Choose a PIN of 4 to 8 digits. You will use it to tell us you are safe and to "
            "call off an alert. Don't use your phone's unlock code."
        ),
        sensitive=True,
    )


def remember_pin(ctx: Context, key: str) -> str:
    """Keep a keyed hash of the first entry of a new PIN, only to compare the confirmation
    with it. One a captor would try first (``pins.guessable``) is refused, the duress PIN's
    too: were only the cancel PIN held to it, a guessable PIN would give itself away as the
    duress one (R8)."""
    typed = ctx.need_pin()
    if pins.guessable(typed):
        raise Retry(ctx._("That PIN is too easy to guess (like 1234 or 1111). Choose another."))
    ctx.data[key] = ctx.vault.blind_index("pin-confirm", typed).hex()
    return typed


def confirm_pin(ctx: Context, key: str) -> str | None:
    typed = ctx.need_pin()
    first = ctx.data.pop(key, None)
    return typed if first == ctx.vault.blind_index("pin-confirm", typed).hex() else None


async def cancel_pin(ctx: Context) -> str:
    remember_pin(ctx, "first")
    ctx.ask(ctx._("Send the same PIN again to confirm."), sensitive=True)
    return "cancel_pin_again"


async def cancel_pin_again(ctx: Context) -> str:
    assert ctx.defender is not None
    typed = confirm_pin(ctx, "first")
    if typed is None:
        ctx.say(ctx._("The two PINs were different. Let's try again."))
        ask_cancel_pin(ctx)
        return "cancel_pin"
    pepper = ctx.vault.keyring.pepper
    await asyncio.to_thread(pins.set_pins, ctx.defender, pepper, cancel=typed, duress=None)
    ctx.data["cancel"] = ctx.vault.blind_index("pin-confirm", typed).hex()
    ask_duress_pin(ctx)
    return "duress_pin"


def ask_duress_pin(ctx: Context) -> None:
    ctx.ask(
        ctx._(
            "Now choose a second, different PIN for emergencies. If someone forces you to call "
            "off an alert or to say you are safe, give them this one: it will look as if it "
            "worked, and we will quietly tell the desk you are in danger."
        ),
        sensitive=True,
    )


async def duress_pin(ctx: Context) -> str:
    typed = ctx.need_pin()
    if ctx.vault.blind_index("pin-confirm", typed).hex() == ctx.data.get("cancel"):
        raise Retry(ctx._("This PIN must be different from the first one."))
    remember_pin(ctx, "first")
    ctx.ask(ctx._("Send the emergency PIN again to confirm."), sensitive=True)
    return "duress_pin_again"


async def duress_pin_again(ctx: Context) -> str:
    assert ctx.defender is not None
    typed = confirm_pin(ctx, "first")
    if typed is None:
        ctx.say(ctx._("The two PINs were different. Let's try again."))
        ask_duress_pin(ctx)
        return "duress_pin"
    pepper = ctx.vault.keyring.pepper
    await asyncio.to_thread(pins.set_pins, ctx.defender, pepper, cancel=None, duress=typed)
    ctx.data.pop("cancel", None)
    ctx.say(ctx._("Your PINs are set."))
    return setup.ask_zone(ctx, chain=True)


def finish(ctx: Context) -> None:
    assert ctx.defender is not None
    ctx.defender.status = DefenderStatus.active
    ctx.say(
        ctx._(
            "You're all set. Send /help at any time to see what you can do. You can change "
            "everything later in /settings."
        )
    )
    help.menu(ctx)


STATES = {
    "resume": resume,
    "language": language,
    "briefing": briefing,
    "cancel_pin": cancel_pin,
    "cancel_pin_again": cancel_pin_again,
    "duress_pin": duress_pin,
    "duress_pin_again": duress_pin_again,
}
