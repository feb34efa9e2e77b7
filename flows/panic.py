"""The alert: one message (command, button or code phrase) raises it before anything is asked.

    (any state) --trigger--> start: alert raised (P0: desk and contacts told at once)
        --> location (share / skip) --> talk (yes / no) --> hold
    hold --"call it off" / cancel--> pin --cancel PIN--> false alarm, everyone told --> idle
                                         --duress PIN, or 3rd wrong--> the same reply, and a
                                           silent duress alert (do not contact the device)

Words typed meanwhile (a place at "share your location", what is happening) are added to the
alert for the desk (``told``), sealed to the organisation's key as its notes are.

Discreet mode asks nothing: a plain "OK." and the PIN still calls it off; anything else typed
meanwhile is answered as if no alert were on (the phone may be in other hands). A location
shared anyway is deleted from the chat (``flows.router``), unless it is live: its updates arrive as
edits and feed the open alert silently, and deleting it would stop them. A live one is
deleted once over: its period run out, its sharing stopped, or the alert resolved
(``core.live_locations``).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from core import actions, alert_handling, alert_updates, alerts, desk_alerts
from core.messages import Choice
from core.models import Alert, AlertKind, Organisation, Priority
from core.pins import Verdict
from core.text import pin as typed_pin
from flows import help, words
from flows.context import END, Context, Retry

NAME = "panic"
TTL = timedelta(hours=24)  # the alert itself never expires with the conversation
PIN_STATES = ("hold", "pin")
# The questions after the alert (where, can they talk): answered even from a chat whose
# safety number changed (flows.router_alarms.frozen); calling the alert off is not.
TELLING = ("location", "talk")
MAX_TOLD = 20  # notes the defender may add to one alert (R21: submissions are bounded)


async def raise_now(ctx: Context) -> Alert:
    assert ctx.defender is not None
    ctx.priority = Priority.P0
    return await alerts.raise_alert(
        ctx.session, ctx.vault, defender=ctx.defender, kind=AlertKind.panic, now=ctx.now
    )


async def start(ctx: Context) -> str:
    alert = await raise_now(ctx)
    ctx.data = {"alert": str(alert.id)}
    _ = ctx._
    if ctx.discreet:
        ctx.say(_("OK."))
        return "hold"
    ctx.say(_("Alert sent. The desk and your trusted contacts are being told now."))
    ctx.ask(
        _("If you can, share your location with your messenger. Only the desk can read it."),
        (Choice("skip", _("Skip")),),
        location=True,
    )
    return "location"


async def _alert(ctx: Context) -> Alert | None:
    if "alert" not in ctx.data:
        return None
    found = await ctx.session.get(Alert, uuid.UUID(ctx.data["alert"]))
    return found if found is not None and found.open_key is not None else None


async def over(ctx: Context) -> bool:
    """Whether the alert this conversation is about is no longer open: the desk resolved it
    meanwhile (the defender's own call-off ends the conversation). Nothing is in progress
    then: what comes next is answered as with no alert on (``flows.router``), "cancel" and
    the PIN at the call-off step included, so either PIN gets the same there (R8)."""
    return await _alert(ctx) is None


async def _locate(ctx: Context, alert: Alert | None = None) -> bool:
    where = ctx.inbound.location
    if where is None:
        return False
    alert = alert or await _alert(ctx)
    if alert is not None:
        live = where.live and not ctx.inbound.edited
        await alert_updates.add_location(
            ctx.session,
            ctx.vault,
            alert=alert,
            latitude=where.latitude,
            longitude=where.longitude,
            now=ctx.now,
            shared=ctx.inbound.chat_message_id if live else None,
            update=ctx.inbound.edited,
        )
    return True


def says_safe(ctx: Context) -> bool:
    """ "I'm safe" typed alone while the alert is on ("estoy bien", "je vais bien"): the
    defender means to call it off, which takes the PIN (R11), not a note for the desk.
    Discreet mode answers as with no alert on (``hold``)."""
    text, me = ctx.inbound.text, ctx.defender
    if ctx.discreet or ctx.inbound.choice or text is None or me is None:
        return False
    return me.cancel_pin_hash is not None and words.label(text) in words.ROLLCALL_SAFE


async def location(ctx: Context) -> str:
    _ = ctx._
    if await _locate(ctx):
        ctx.say(_("Location received."))
    elif says_safe(ctx):
        return ask_pin(ctx)
    elif ctx.yes_or_no() is not False and ctx.choice_or_none("skip") is None:  # "no": skip
        if await told(ctx):  # a place in words: for the desk, and the next question
            return ask_talk(ctx)
        raise Retry(_("Share your location with your messenger's location button, or skip."))
    return ask_talk(ctx)


def ask_talk(ctx: Context) -> str:
    _ = ctx._
    ctx.ask(
        _("Can you talk on the phone right now?"),
        (Choice("yes", _("Yes, I can talk")), Choice("no", _("No, I can't talk"))),
    )
    return "talk"


async def told(ctx: Context) -> bool:
    """Words typed for the open alert, not an answer to its question: sealed at once to the
    organisation's key as a note on the alert, which only the desk opens (as its responders'
    notes: ``core.desk_alerts.add_note``), deleted from the chat, and acknowledged; the desk
    is paged that there is one, as for a location shared (``core.alert_updates.note_added``).
    Not in discreet mode (answered as with no alert on: ``hold``), nor a message without a letter
    (a PIN mistyped, a number), a bare yes or no, a button; PINs, code phrases and cancel
    words never reach a state function (``flows.router``). False: not taken."""
    inbound, alert = ctx.inbound, await _alert(ctx)
    if ctx.discreet or alert is None or inbound.choice or inbound.attachments:
        return False
    text = inbound.text or ""
    if not any(c.isalpha() for c in text) or ctx.yes_or_no() is not None:
        return False
    org = await ctx.session.get(Organisation, alert.org_id)
    if org is None or org.public_key is None or ctx.data.get("told", 0) >= MAX_TOLD:
        return False  # never stored in clear; beyond the bound, as before: not taken
    ctx.forget_message()  # where the defender is, who is there: not left on the phone
    await desk_alerts.add_note(
        ctx.session,
        ctx.vault,
        alert=alert,
        org=org,
        text=ctx.need_text(),
        author_id=None,
        actor="defender",
        now=ctx.now,
    )
    await alert_updates.note_added(ctx.session, ctx.vault, alert=alert, now=ctx.now)
    ctx.data["told"] = ctx.data.get("told", 0) + 1
    ctx.say(ctx._("Your message was added to the alert. Only the desk can read it."))
    return True


async def talk(ctx: Context) -> str:
    said = ctx.yes_or_no()  # "sí", "non", "لا": the bare word, in any of our languages
    if said is None and says_safe(ctx):
        return ask_pin(ctx)
    if said is None and ctx.choice_or_none("yes", "no") is None and await told(ctx):
        ctx.ask_again()
        return "talk"
    can_talk = said if said is not None else ctx.need_choice("yes", "no") == "yes"
    alert = await _alert(ctx)
    if alert is not None:
        event = actions.event(alert, "can_talk", ctx.now, actor="defender", can_talk=can_talk)
        ctx.session.add(event)
    ctx.say(ctx._("Thank you. Help is being organised."))
    return ask_hold(ctx)


def ask_hold(ctx: Context) -> str:
    assert ctx.defender is not None
    if ctx.defender.cancel_pin_hash is None:  # no PIN yet: the desk will close it
        return END
    ctx.ask(
        ctx._("If this was a mistake, you can call it off with your PIN."),
        (Choice("calloff", ctx._("Call it off")),),
    )
    return "hold"


async def hold(ctx: Context) -> str:
    if await _locate(ctx):
        ctx.say(ctx._("Location received."))
        return "hold"
    if ctx.choice_or_none("calloff") or says_safe(ctx):
        return ask_pin(ctx)
    if typed_pin(ctx.inbound.text or "") is not None:
        try:
            return await pin(ctx)  # the PIN sent straight away
        except Retry:
            if not ctx.discreet:
                raise
            # A wrong PIN, counted (pins.count); answered as any number with no alert on.
    if ctx.discreet:  # nothing on screen says an alert is on: answered as with none
        help.menu(ctx, unknown=True)
        return "hold"
    if await told(ctx):
        ctx.ask_again()
        return "hold"
    raise Retry(ctx._("Your alert is still on. To call it off, send your PIN."))


def ask_pin(ctx: Context) -> str:
    ctx.ask(ctx._("Send your PIN to call off the alert."), sensitive=True)
    return "pin"


async def pin(ctx: Context) -> str:
    assert ctx.defender is not None
    verdict = await ctx.confirm_pin()
    alert = await _alert(ctx)
    if verdict is Verdict.ok and alert is not None:  # under duress the alert stays on
        await alert_handling.cancel_alert(ctx.session, ctx.vault, alert=alert, now=ctx.now)
    elif alert is not None:  # and is never taken up again from the phone (``taken_up``)
        await alert_handling.ignore_cancel(ctx.session, alert=alert, now=ctx.now)
    # Byte for byte the same after either PIN: whoever holds the phone must not tell them apart.
    ctx.say(ctx._("Alert called off. Everyone who was told will hear it was a false alarm."))
    return END


async def taken_up(ctx: Context) -> bool:
    """The defender's open alert, when its conversation has closed (a day's silence, or
    another conversation since): "cancel", the PIN or the call-off button takes it up again
    at ``hold``, as the alert is still on (its TTL is the conversation's, not the alert's).
    Never one the phone was told was called off (the duress PIN), nor while a duress alert
    is open: that phone's next "cancel" must get what it gets with no alert on (R8)."""
    assert ctx.defender is not None
    key = alerts.dedup_key(ctx.defender.id, AlertKind.panic)
    alert = await alerts.open_alert(ctx.session, key)
    if alert is None or await alerts.is_open(ctx.session, ctx.defender.id, AlertKind.duress):
        return False
    if await alert_handling.cancel_ignored(ctx.session, alert):
        return False
    ctx.data = {"alert": str(alert.id)}
    return True


async def on_cancel(ctx: Context) -> str:
    if ctx.discreet:  # as "cancel" with nothing in progress; the PIN still calls it off
        help.menu(ctx)
        return "hold"
    ctx.say(ctx._("The alert stays on until you call it off with your PIN."))
    return ask_pin(ctx)


async def edited(ctx: Context) -> None:
    """An edit: an update of the live location shared for the open alert feeds it (one
    shared for a report or an earlier alert does not); anything else is not read."""
    if ctx.inbound.location is not None and ctx.defender is not None:
        key = alerts.dedup_key(ctx.defender.id, AlertKind.panic)
        alert = await alerts.open_alert(ctx.session, key)
        message = ctx.inbound.chat_message_id
        if alert is not None and await alert_updates.shared_live(ctx.session, alert, message):
            await _locate(ctx, alert)
        return
    if ctx.inbound.text is not None:
        ctx.say(ctx._("I don't read edited messages. Please send a new message instead."))


STATES = {"start": start, "location": location, "talk": talk, "hold": hold, "pin": pin}
TRIGGERS: dict[str, str] = {}
