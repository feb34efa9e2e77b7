"""Settings: language, PINs, contacts, routine, time zone, discreet mode, code phrases, pause,
delete my data.

    /settings --> menu --language--> language --> saved
                       --PINs--> old_pin --> which --> new_pin --> new_pin_again --> saved
                       --contacts--> contacts --add--> add_pin --> setup:contact_label
                                              --remove--> remove_pin --> remove_label
                       --routine / time zone--> the setup step, alone
                       --code phrases--> phrases_pin --> phrases --> the setup step, alone
                       --discreet--> discreet --on--> discreet_delay --> saved
                                              --off--> discreet_pin --> saved
                       --disappearing (Signal only)--> disappearing --> saved
                       --pause--> checkin:pause_reason
                       --delete my data--> delete_pin --> everything forgotten

Every step that takes a PIN treats the duress PIN like the real one on screen: it says the
same, raises a silent duress alert, and changes nothing ("shadow" mode). Deleting the data
with it hides the defender instead (``core.defenders.hide``): from then on the bot answers
as after a real deletion until a responder restores them.

The discreet and disappearing steps, and the two delays they keep, are in ``flows.delays``.
"""

from __future__ import annotations

import asyncio

from core import contacts, pins
from core.defenders import delete_data, hide, save_settings
from core.messages import Choice, Outbound
from core.models import Consent, Defender
from core.pins import Verdict
from core.security import hash_pin, verify_pin
from flows import checkin, delays, help, onboarding, setup
from flows.context import END, Context, Retry

NAME = "settings"
PIN_STATES = ("old_pin", "add_pin", "remove_pin", "phrases_pin", "discreet_pin", "delete_pin")
# Where a new PIN is typed: not the PIN in use, so the duress PIN chosen again is no alarm
# (flows.router_alarms.idle_pin checks a PIN typed in any other state).
NEW_PIN_STATES = ("new_pin", "new_pin_again")
MENU = (
    "language", "pins", "contacts", "routine", "zone", "discreet", "disappearing", "phrases",
    "pause", "delete", "help",
)  # fmt: skip
SIGNAL_ONLY = ("disappearing",)


def menu_keys(ctx: Context) -> tuple[str, ...]:
    signal = ctx.inbound.channel == "signal"
    return tuple(k for k in MENU if signal or k not in SIGNAL_ONLY)


async def start(ctx: Context) -> str:
    _ = ctx._
    labels = {
        "language": _("Language"),
        "pins": _("Change a PIN"),
        "contacts": _("Trusted contacts"),
        "routine": _("Regular check-in"),
        "zone": _("Time zone"),
        "discreet": _("Discreet mode"),
        "disappearing": _("Disappearing messages"),
        "phrases": _("Code phrases"),
        "pause": _("Pause check-ins"),
        "delete": _("Delete my data"),
        "help": _("Help"),
    }
    ctx.ask(
        _("Settings: what would you like to change?"),
        tuple(Choice(k, labels[k]) for k in menu_keys(ctx)),
    )
    return "menu"


def ask_pin(ctx: Context, text: str, state: str) -> str:
    ctx.ask(text, sensitive=True)
    return state


async def menu(ctx: Context) -> str:
    _ = ctx._
    picked = ctx.need_choice(*menu_keys(ctx))
    if picked == "language":
        onboarding.ask_language(ctx)
        return "language"
    if picked == "pins":
        return ask_pin(ctx, _("Send your current PIN."), "old_pin")
    if picked == "contacts":
        return await show_contacts(ctx)
    if picked == "routine":
        return setup.ask_routine(ctx)
    if picked == "zone":
        return setup.ask_zone(ctx)
    if picked == "discreet":
        return delays.ask_discreet(ctx)
    if picked == "disappearing":
        return delays.ask_disappearing(ctx)
    if picked == "phrases":
        return ask_pin(ctx, _("Send your PIN first."), "phrases_pin")
    if picked == "pause":
        return checkin.ask_pause(ctx)
    if picked == "delete":
        text = _(
            "This deletes your PINs, contacts, check-ins and settings. Reports you already "
            "sent stay with the desk. Send your PIN to confirm, or /cancel."
        )
        return ask_pin(ctx, text, "delete_pin")
    help.show(ctx)
    return END


async def language(ctx: Context) -> str:
    assert ctx.defender is not None
    ctx.defender.locale = onboarding.pick_language(ctx)
    ctx.say(ctx._("Saved."))
    return END


async def _verdict(ctx: Context) -> Verdict:
    """ok or duress (duress also raises the silent alert); a wrong PIN asks again."""
    assert ctx.defender is not None
    verdict = await ctx.confirm_pin()
    ctx.data["shadow"] = verdict is Verdict.duress
    return verdict


async def old_pin(ctx: Context) -> str:
    await _verdict(ctx)
    _ = ctx._
    ctx.ask(
        _("Which PIN do you want to change?"),
        (Choice("cancel", _("My everyday PIN")), Choice("duress", _("My emergency PIN"))),
    )
    return "which"


async def which(ctx: Context) -> str:
    ctx.data["which"] = ctx.need_choice("cancel", "duress")
    return ask_pin(ctx, ctx._("Send the new PIN (4 to 8 digits)."), "new_pin")


async def new_pin(ctx: Context) -> str:
    assert ctx.defender is not None
    typed = ctx.need_pin()
    cancel, duress = ctx.defender.cancel_pin_hash, ctx.defender.duress_pin_hash
    if ctx.data.get("shadow"):
        # Whoever typed the duress PIN as the current one takes it for the everyday PIN:
        # answer as if it were (and never reveal whether a PIN is the real one).
        other = duress if ctx.data["which"] == "duress" else None
    else:
        other = duress if ctx.data["which"] == "cancel" else cancel
    pepper = ctx.vault.keyring.pepper
    # One Argon2id run inside the transaction: rare (changing a PIN), so not worth an early check.
    # Run on every path (against either PIN when none is to differ), for the same latency (R8).
    checked = other or duress or cancel
    clash = checked is not None and await asyncio.to_thread(verify_pin, checked, typed, pepper)
    if other is not None and clash:
        raise Retry(ctx._("Your two PINs must be different."))
    onboarding.remember_pin(ctx, "first")
    return ask_pin(ctx, ctx._("Send the new PIN again to confirm."), "new_pin_again")


async def new_pin_again(ctx: Context) -> str:
    assert ctx.defender is not None
    typed = onboarding.confirm_pin(ctx, "first")
    if typed is None:
        ctx.say(ctx._("The two PINs were different. Let's try again."))
        return ask_pin(ctx, ctx._("Send the new PIN (4 to 8 digits)."), "new_pin")
    pepper, defender = ctx.vault.keyring.pepper, ctx.defender
    # Every path runs one Argon2id check and one hash, for the same latency (R8).
    is_cancel = await _is_cancel(defender, typed, pepper)
    if not ctx.data.get("shadow"):
        cancel, duress = (typed, None) if ctx.data["which"] == "cancel" else (None, typed)
        await asyncio.to_thread(pins.set_pins, defender, pepper, cancel=cancel, duress=duress)
    elif ctx.data["which"] == "cancel" and not is_cancel:
        # Forced to "change the everyday PIN" with the duress PIN: the new one becomes the
        # emergency PIN, so typed later it does what the real one does (and alerts again),
        # and the old one is refused, as after a real change. The real PIN stays.
        await asyncio.to_thread(pins.set_pins, defender, pepper, cancel=None, duress=typed)
    else:
        await asyncio.to_thread(hash_pin, typed, pepper)  # a hash as the other paths run
    if ctx.data.get("shadow") and ctx.data["which"] == "duress":
        # Forced to "change the emergency PIN" with the duress PIN: the new one must do later
        # what an emergency PIN does (look accepted, alert silently), yet the real one stays.
        # At the wrong-PIN limit any PIN but the real one reads as duress, until the real
        # one (the defender's) resets the count (core.pins.count).
        defender.failed_pins = max(defender.failed_pins, pins.WRONG_LIMIT)
    ctx.say(ctx._("PIN changed."))
    return END


async def _is_cancel(defender: Defender, typed: str, pepper: bytes) -> bool:
    stored = defender.cancel_pin_hash
    return stored is not None and await asyncio.to_thread(verify_pin, stored, typed, pepper)


async def show_contacts(ctx: Context) -> str:
    assert ctx.defender is not None
    hidden = ctx.settings.get(contacts.HIDDEN, [])
    n = await contacts.counts(ctx.session, defender_id=ctx.defender.id, hidden=hidden)
    confirmed, waiting = n[Consent.confirmed], n[Consent.invited]
    text = ctx.ngettext(
        "You have {count} confirmed contact.", "You have {count} confirmed contacts.", confirmed
    ).format(count=confirmed)
    if waiting:
        text += " " + ctx.ngettext(
            "{count} invitation is waiting for an answer.",
            "{count} invitations are waiting for an answer.",
            waiting,
        ).format(count=waiting)
    text += "\n" + setup.called(ctx)
    ctx.ask(
        text,
        (
            Choice("add", ctx._("Add a contact")),
            Choice("remove", ctx._("Remove a contact")),
            Choice("back", ctx._("Back")),
        ),
    )
    return "contacts"


async def contacts_step(ctx: Context) -> str:
    picked = ctx.need_choice("add", "remove", "back")
    if picked == "add":
        return ask_pin(ctx, ctx._("Send your PIN first."), "add_pin")
    if picked == "remove":
        return ask_pin(ctx, ctx._("Send your PIN first."), "remove_pin")
    return await start(ctx)


async def add_pin(ctx: Context) -> str:
    """Whoever holds the phone must not make themselves a contact who hears every alert:
    the PIN first. Under the duress PIN the contact is a shadow one (``setup.contact_label``):
    the same code and answers, but never notified."""
    await _verdict(ctx)
    ctx.data["chain"] = False
    return setup.ask_label(ctx)


async def remove_pin(ctx: Context) -> str:
    await _verdict(ctx)
    ctx.ask(ctx._("Send the name you gave the contact you want to remove."), sensitive=True)
    return "remove_label"


async def remove_label(ctx: Context) -> str:
    assert ctx.defender is not None
    label = ctx.need_text()
    ctx.forget_message()
    shadow, current = bool(ctx.data.get("shadow")), ctx.settings
    hidden = current.get(contacts.HIDDEN, [])
    removed = await contacts.remove_by_label(
        ctx.session, ctx.vault, defender_id=ctx.defender.id, label=label,
        dry_run=shadow, hidden=hidden,
    )  # fmt: skip
    if shadow and removed:  # still alerted; only no longer shown, as if removed
        save_settings(ctx.vault, ctx.defender, {**current, contacts.HIDDEN: [*hidden, *removed]})
    ctx.say(ctx._("Removed.") if removed else ctx._("No contact has that name."))
    return END


async def phrases_pin(ctx: Context) -> str:
    """Whoever holds the phone must not silence the alert phrase: the PIN first. Under the
    duress PIN every answer is the same and nothing changes (``setup._save_phrase``)."""
    await _verdict(ctx)
    _ = ctx._
    ctx.ask(
        _("Which code phrase?"),
        (
            Choice("alert_phrase", _("Alert phrase")),
            Choice("safe_phrase", _("I'm safe phrase")),
            Choice("remove", _("Remove both")),
        ),
    )
    return "phrases"


async def phrases(ctx: Context) -> str:
    assert ctx.defender is not None
    picked = ctx.need_choice("alert_phrase", "safe_phrase", "remove")
    if picked == "alert_phrase":
        return setup.ask_alert_phrase(ctx)
    if picked == "safe_phrase":
        return setup.ask_safe_phrase(ctx)
    if not ctx.data.get("shadow"):
        current = ctx.settings
        cleared = {**current, "alert_phrase": None, "safe_phrase": None}
        save_settings(ctx.vault, ctx.defender, cleared)
    ctx.say(ctx._("Code phrases removed."))
    return END


async def discreet_pin(ctx: Context) -> str:
    """Turning discreet mode off takes the PIN (``delays.discreet``); the duress PIN says the
    same and leaves it on."""
    assert ctx.defender is not None
    if await _verdict(ctx) is Verdict.ok:
        ctx.defender.discreet = False
    # Said as once it is off (not a sensitive message) even while it stays on.
    ctx.replies.append(Outbound(text=ctx._("Discreet mode is off.")))
    return END


async def delete_pin(ctx: Context) -> str:
    assert ctx.defender is not None
    if await _verdict(ctx) is Verdict.ok:
        await delete_data(ctx.session, defender=ctx.defender)
    else:  # the duress PIN: look deleted from now on, keep everything for the desk
        await hide(ctx.session, defender=ctx.defender)
    ctx.forgotten = True
    ctx.say(ctx._("Your data is deleted. You can now delete this chat too."))
    return END


TRIGGERS = {"/settings": "start", "menu:settings": "start"}
STATES = {
    "start": start,
    "menu": menu,
    "language": language,
    "old_pin": old_pin,
    "which": which,
    "new_pin": new_pin,
    "new_pin_again": new_pin_again,
    "contacts": contacts_step,
    "add_pin": add_pin,
    "remove_pin": remove_pin,
    "remove_label": remove_label,
    "discreet": delays.discreet,
    "discreet_delay": delays.discreet_delay,
    "disappearing": delays.disappearing,
    "phrases_pin": phrases_pin,
    "phrases": phrases,
    "discreet_pin": discreet_pin,
    "delete_pin": delete_pin,
}
