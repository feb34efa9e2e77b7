"""How long our messages stay: the settings steps for discreet mode and disappearing messages.

Not a flow of its own: ``flows.settings`` lists these steps among its states. Two delays live
in the defender's encrypted settings: ``discreet_delay_s`` (how long the bot's sensitive
messages stay before discreet mode deletes them) and, on Signal, ``signal_expiry_s`` (the
chat's disappearing-messages timer, carried to the channel as an outbox instruction).
"""

from __future__ import annotations

from datetime import timedelta

from babel.dates import format_timedelta

from core.defenders import save_settings
from core.messages import Choice, Outbound
from core.models import Priority
from core.outbox import enqueue
from flows.context import END, Context

# Disappearing messages on Signal. No "off": a chat without a timer gets the default back
# from the channel (bot/signal.py), the safe side for a seized phone.
EXPIRY_KEY, EXPIRY_DEFAULT_S = "signal_expiry_s", 24 * 3600
EXPIRIES = {"1h": 3600, "1d": 24 * 3600, "1w": 7 * 24 * 3600}
DELAY_KEY = "discreet_delay_s"  # core.discreet reads it (10 minutes when unset)
DELAYS = {"1m": 60, "10m": 10 * 60, "1h": 3600, "12h": 12 * 3600}


def duration(ctx: Context, seconds: int) -> str:
    """Babel's own words for a duration ("1 hour", "1 semana"): no catalogue entry needed."""
    return format_timedelta(
        timedelta(seconds=seconds), threshold=1, format="long", locale=ctx.locale
    )


def durations(ctx: Context, options: dict[str, int]) -> tuple[Choice, ...]:
    return tuple(Choice(key, duration(ctx, seconds)) for key, seconds in options.items())


def save_choice(ctx: Context, key: str, options: dict[str, int]) -> int:
    """Store the picked option's seconds under ``key`` in the defender's settings."""
    assert ctx.defender is not None
    seconds = options[ctx.need_choice(*options)]
    save_settings(ctx.vault, ctx.defender, {**ctx.settings, key: seconds})
    return seconds


def ask_discreet(ctx: Context) -> str:
    _ = ctx._
    ctx.ask(
        _(
            "Discreet mode hides the alert button and asks channels that can to delete "
            "our messages. Your code phrase still raises an alert."
        ),
        (Choice("on", _("Turn on")), Choice("off", _("Turn off"))),
    )
    return "discreet"


async def discreet(ctx: Context) -> str:
    assert ctx.defender is not None
    if ctx.need_choice("on", "off") == "off":  # takes the PIN: flows.settings.discreet_pin
        ctx.ask(ctx._("Send your PIN first."), sensitive=True)
        return "discreet_pin"
    ctx.defender.discreet = True
    ctx.say(ctx._("Discreet mode is on."))
    ctx.ask(
        ctx._("After how long should we delete our sensitive messages?"),
        durations(ctx, DELAYS),
    )
    return "discreet_delay"


async def discreet_delay(ctx: Context) -> str:
    seconds = save_choice(ctx, DELAY_KEY, DELAYS)
    ctx.say(
        ctx._("Saved: our sensitive messages are deleted after {delay}.").format(
            delay=duration(ctx, seconds)
        )
    )
    return END


def ask_disappearing(ctx: Context) -> str:
    current = int(ctx.settings.get(EXPIRY_KEY, EXPIRY_DEFAULT_S))
    ctx.ask(
        ctx._(
            "Messages in this chat disappear after {delay}. After how long should they disappear?"
        ).format(delay=duration(ctx, current)),
        durations(ctx, EXPIRIES),
    )
    return "disappearing"


async def disappearing(ctx: Context) -> str:
    seconds = save_choice(ctx, EXPIRY_KEY, EXPIRIES)
    await set_expiry(ctx, seconds)
    ctx.say(
        ctx._("Saved: messages in this chat now disappear after {delay}.").format(
            delay=duration(ctx, seconds)
        )
    )
    return END


async def set_expiry(ctx: Context, seconds: int) -> None:
    """Queue the timer for this Signal chat: an instruction row of its own (no text), so that
    it cannot be merged away with the replies, keyed on the event (a replay queues nothing)."""
    if ctx.address.channel != "signal":
        return  # other channels have no timer of ours to set
    seen = ctx.vault.blind_index(f"inbound:{ctx.inbound.channel}", ctx.inbound.message_id)
    await enqueue(
        ctx.session, ctx.vault, to=ctx.address, message=Outbound(text="", expiry_s=seconds),
        priority=Priority.P1, key=f"expiry:{seen.hex()}", now=ctx.now, recipient="defender",
    )  # fmt: skip
