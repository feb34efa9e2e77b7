"""Help, the main menu, and the plain-words briefing on what each messenger protects.

(any state) --help--> help text, then the pending question again (state kept)
idle --/safety--> briefing --> idle
"""

from __future__ import annotations

from core.messages import Choice
from flows.context import END, Context

NAME = "help"
TTL = None


def menu(ctx: Context, *, unknown: bool = False) -> None:
    _ = ctx._
    if unknown:
        ctx.say(_("Sorry, I didn't understand that."))
    choices = [
        Choice("safe", _("I'm safe")),
        Choice("menu:checkin", _("Check-in timer")),
        Choice("menu:report", _("Report an incident")),
        Choice("menu:settings", _("Settings")),
        Choice("menu:help", _("Help")),
    ]
    if not ctx.discreet:  # discreet mode: the code phrase is the only way, nothing to spot
        choices.append(Choice("panic", _("Alert my contacts now")))
    ctx.ask(_("What would you like to do?"), tuple(choices))


def show(ctx: Context, *, in_progress: bool = False) -> None:
    _ = ctx._
    lines = [
        _("Here is what you can send:"),
        _("/checkin: start a timer, set a daily check-in, or see when the next one is due"),
        _("/safe: tell us you are safe (you will need your PIN)"),
        _("/report: tell the desk about an incident"),
        _("/settings: language, PINs, contacts, time zone and more"),
    ]
    if not ctx.discreet:
        lines.append(_("/alert: tell your contacts and the desk you need help now"))
    lines += [
        _("/cancel: stop what you are doing"),
        _("/safety: what this chat can and cannot protect"),
        _("Your own code phrases work at any time."),
    ]
    if in_progress:
        lines.append(_("You can carry on where you were:"))
    ctx.say("\n".join(lines))


def briefing(ctx: Context) -> str:
    _ = ctx._
    channel = ctx.inbound.channel
    if channel == "telegram":
        return _(
            "Telegram does not encrypt this chat end to end: Telegram can read it, and may hand "
            "over your phone number and IP address if a court orders it. If you are at high "
            "risk, ask the desk for its Signal number: Signal encrypts messages end to end. "
            "We delete the messages of this chat within a day, and your PINs at once."
        )
    if channel == "signal":
        return _(
            "Signal encrypts this chat end to end, up to our server, where messages are "
            "decrypted so we can act on them. Turn on disappearing messages for this chat and "
            "keep a screen lock on your phone."
        )
    return _(
        "Telegram does not encrypt chats with us end to end; Signal does. If you are at high "
        "risk, use Signal, and turn on disappearing messages."
    )


async def safety(ctx: Context) -> str:
    ctx.say(briefing(ctx))
    return END


async def show_state(ctx: Context) -> str:
    show(ctx)
    return END


TRIGGERS = {"/safety": "safety", "menu:help": "show"}
STATES = {"safety": safety, "show": show_state}
