"""What the router (``flows.router``) raises or refuses outside any flow's state function:
the alert trigger (``is_alert``; from a hidden defender too, ``hidden_alert``), a Signal chat
whose safety number changed (``key_changed`` on receipt, then ``frozen`` until the desk has
verified it, R6), and a PIN typed where no question asks for one (``pin_in_use``,
``idle_pin``; after an unexpected error, ``duress_pin``): the duress PIN's silent alert.
"""

from __future__ import annotations

import dataclasses
import re

from core import alerts
from core.messages import Inbound
from core.models import AlertKind, Defender, DefenderStatus
from core.pins import Verdict
from core.text import fold, pin
from flows import registry, settings, store, words
from flows.context import Context

_COMMAND = re.compile(r"[\s@]")  # "/sos@AmparoBot", "/sos they are here": the command alone


def is_alert(ctx: Context, choice: str | None, typed: str) -> bool:
    """The alert button, an alert command (words after it, "@bot" or "!" change nothing:
    "/sos police at the door"), a bare "SOS!" alone ("¡SOS!", "S.O.S." too), or the
    defender's code phrase."""
    if alert_word(choice, typed):
        return True
    return words.same_phrase(typed, ctx.settings.get("alert_phrase"))


def alert_word(choice: str | None, typed: str) -> bool:
    """``is_alert`` but the code phrase: what needs nothing of the defender to be seen."""
    if choice == words.ALERT_CHOICE or words.cry(typed):
        return True
    command = _COMMAND.split(typed, maxsplit=1)[0].rstrip("!.?")
    return command.startswith("/") and command in words.ALERT


def alarm_shaped(inbound: Inbound) -> bool:
    """What a chat over its allowance still gets read for (``flows.engine``, R21): the alert
    button or word, anything shaped like a PIN (the duress PIN's silent alert), a location
    (an alert's), Signal's word that the sender's safety number changed (R6). A code phrase
    is not told apart there: that needs the defender's settings, which is the reading a
    flood must not cost."""
    text = inbound.text or ""
    typed = fold(text) if text else ""
    shaped = alert_word(inbound.choice, typed) or pin(text) is not None
    return shaped or inbound.location is not None or inbound.key_changed


async def frozen(ctx: Context) -> bool:
    """R6: while the desk has not resolved a defender's "safety number changed" alert, their
    Signal chat may be a new phone, or their number in someone else's hands. Only an alert
    is taken from it: no "I'm safe", PIN, cancel, setting or deletion (an "I'm safe" from a
    phone in other hands would stop the check-in's escalation). The desk resolves the alert
    once it has verified the defender another way and trusted the new key."""
    if ctx.inbound.channel != "signal" or ctx.defender is None:
        return False
    return await alerts.is_open(ctx.session, ctx.defender.id, AlertKind.identity_changed)


async def key_changed(event: store.Event, loaded: store.Loaded) -> None:
    """R6 on receipt: signal-cli could not decrypt a message from a defender's Signal chat,
    their safety number having changed. The desk is alerted at once, as when a send to them
    is refused (core.delivery), so the chat is ``frozen`` before anything from the new key is
    acted on (signal-cli offers the message again once the desk has trusted the key).
    Nothing is answered: no reply could reach an untrusted key."""
    owner = loaded.defender or loaded.hidden
    if owner is not None:
        await alerts.raise_alert(
            event.session,
            event.vault,
            defender=owner,
            kind=AlertKind.identity_changed,
            now=event.now,
        )


def pin_in_use(ctx: Context, flow: str, state: str) -> bool:
    """Whether a PIN typed here is one in use, not a new one being chosen (onboarding,
    settings.NEW_PIN_STATES: the duress PIN chosen again is no alarm)."""
    assert ctx.defender is not None
    choosing = flow == settings.NAME and state in settings.NEW_PIN_STATES
    return not choosing and ctx.defender.status is not DefenderStatus.onboarding


async def idle_pin(ctx: Context) -> None:
    """A PIN typed with no question asking for one (its prompt expired, a question about
    something else, or on a captor's order): the duress PIN still raises its silent alert.
    The answer is what any number gets there, after the same two Argon2id checks whichever
    PIN it is (core.pins); not counted as a wrong PIN either: a stray number is not a guess.
    Only a PIN in use (``pin_in_use``)."""
    typed = pin(ctx.inbound.text or "")
    if typed is None or ctx.pin_checker is None or ctx.defender is None:
        return
    if await ctx.pin_checker(typed) is Verdict.duress:
        await alerts.raise_alert(
            ctx.session, ctx.vault, defender=ctx.defender, kind=AlertKind.duress, now=ctx.now
        )


async def hidden_alert(ctx: Context, hidden: Defender) -> None:
    """A defender hidden after a forced deletion (core.defenders.hide) is answered as a
    stranger, but their alert button, command or code phrase still raises an alert: silently,
    and flagged "do not contact the device" (core.alerts), as the phone may be in other hands."""
    inbound = ctx.inbound
    if inbound.edited or inbound.forwarded:
        return
    typed = fold(inbound.text) if inbound.text else ""
    owner = dataclasses.replace(ctx, defender=hidden, data={}, replies=[], delete_ids=[])
    if is_alert(owner, inbound.choice, typed):
        await alerts.raise_alert(
            ctx.session, ctx.vault, defender=hidden, kind=AlertKind.panic, now=ctx.now
        )


async def duress_pin(event: store.Event, loaded: store.Loaded, ctx: Context) -> bool:
    """The message was the duress PIN, answering a question that asked for a PIN, or typed
    where a PIN in use raises its alert all the same (``idle_pin``)."""
    typed = pin(event.inbound.text or "")
    if typed is None or ctx.defender is None or event.checker is None:
        return False
    flow, state = loaded.flow, loaded.state
    if not (registry.is_pin_state(flow, state) or pin_in_use(ctx, flow, state)):
        return False
    ctx.forget_message()
    return await event.checker(ctx.defender, typed) is Verdict.duress
