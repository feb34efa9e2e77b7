"""Trusted contacts confirming in the bot, and what strangers hear.

    stranger --contact code--> answer --yes/no--> (the defender hears the outcome, as a count)
    stranger --anything else--> welcome (one short line, nothing stored)
    contact --/stop--> every link through this address revoked (each defender hears it, as
        a count; a removed contact's all-clear still owed: nothing more goes)

The contact is told what they agree to, and the generated handle our alerts will call the
defender by (they may be several defenders' contact); never the defender's name or anything
else about them: the defender gave them the code in person.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from core import contacts, i18n
from core.defenders import settings
from core.messages import Choice, Outbound
from core.models import ChannelAddress, Consent, Defender, Priority
from core.outbox import enqueue
from core.recipients import defender_addresses
from core.text import fold
from flows.context import END, Context

NAME = "contact"
TTL = timedelta(days=1)


async def redeem(ctx: Context, code: str) -> tuple[str, str] | None:
    """A contact's invite code: ask them to accept. None if it is no such code."""
    found = await contacts.find_invited(ctx.session, ctx.vault, code=code, now=ctx.now)
    if found is None:
        return None
    _ = ctx._
    if ctx.defender is not None and found.defender_id == ctx.defender.id:
        ctx.say(_("That code is for the person you want as a contact: give it to them."))
        return "idle", "idle"
    ctx.data = {"contact": str(found.id), "code": code}
    ctx.ask(
        _(
            "Someone you know asked you to be one of their trusted contacts. If they miss a "
            "check-in or ask for help, we will message you here with what to do. You can stop "
            "at any time by sending /stop. Do you accept?"
        ),
        (Choice("accept", _("Yes, I accept")), Choice("decline", _("No, thanks"))),
    )
    return NAME, "answer"


async def answer(ctx: Context) -> str:
    accept = ctx.need_choice("accept", "decline") == "accept"
    _ = ctx._
    contact = await contacts.answer(
        ctx.session,
        ctx.vault,
        contact_id=uuid.UUID(ctx.data["contact"]),
        code=ctx.data["code"],
        address=ctx.address,
        accept=accept,
        locale=ctx.locale,
        now=ctx.now,
    )
    if contact is None:
        ctx.say(_("That code is no longer valid. Ask for a new one if you still want to help."))
        return END
    if accept:  # the name our alerts give them: the contact may be several people's
        defender = await ctx.session.get(Defender, contact.defender_id)
        handle = defender.handle if defender is not None else ""
        ctx.say(
            _(
                "Thank you. If they need help, we will message you here. In our messages they "
                "are called {handle}."
            ).format(handle=handle)
        )
    else:
        ctx.say(_("All right. You will not get any messages about them."))
    await _tell_defender(ctx, contact.defender_id, contact.id, ACCEPTED if accept else DECLINED)
    return END


ACCEPTED, DECLINED, STOPPED = "accepted", "declined", "stopped"


async def _tell_defender(
    ctx: Context, defender_id: uuid.UUID, contact_id: uuid.UUID, what: str
) -> None:
    """The defender hears what became of a contact, with how many are confirmed now; never
    of one hidden (removed under duress). A phone under duress hears it too: a contact added
    with the duress PIN (a shadow) must look like any other to whoever holds it (R8)."""
    defender = await ctx.session.get(Defender, defender_id)
    best = (await defender_addresses(ctx.session, [defender_id])).get(defender_id)
    if defender is None or best is None:
        return
    to = await ctx.session.get(ChannelAddress, best[0])
    assert to is not None
    hidden = settings(ctx.vault, defender).get(contacts.HIDDEN, [])
    if str(contact_id) in hidden:  # "removed" under duress: the phone must hear nothing of it
        return
    n = await contacts.counts(ctx.session, defender_id=defender_id, hidden=hidden)
    confirmed = n[Consent.confirmed]
    _, ngettext = i18n.gettext(defender.locale), i18n.ngettext(defender.locale)
    if what == ACCEPTED:
        text = ngettext(
            "A contact accepted. You now have {count} confirmed contact.",
            "A contact accepted. You now have {count} confirmed contacts.",
            confirmed,
        ).format(count=confirmed)
    elif what == STOPPED:
        text = ngettext(
            "A trusted contact asked to stop getting messages. You now have {count} "
            "confirmed contact.",
            "A trusted contact asked to stop getting messages. You now have {count} "
            "confirmed contacts.",
            confirmed,
        ).format(count=confirmed)
    else:
        text = _("A contact you invited declined.")
    await enqueue(
        ctx.session,
        ctx.vault,
        to=to,
        message=Outbound(text=text, sensitive=defender.discreet),
        priority=Priority.P1,
        key=f"contact:{contact_id.hex}:{'answer' if what != STOPPED else what}",
        now=ctx.now,
        recipient="defender",
    )


async def welcome(ctx: Context) -> str:
    _ = ctx._
    typed = fold(ctx.inbound.text or "")
    if typed in ("/stop", "stop") and await contacts.may_stop(ctx.session, address=ctx.address):
        stopped = await contacts.stop(ctx.session, address=ctx.address, now=ctx.now)
        ctx.say(_("Done. You will no longer get messages as a trusted contact."))
        for contact_id, defender_id in stopped.links:  # else they count on a contact gone
            await _tell_defender(ctx, defender_id, contact_id, STOPPED)
    elif await contacts.is_contact(ctx.session, address=ctx.address):
        ctx.say(
            _(
                "You are a trusted contact for someone who uses this service. If they need "
                "help, we will message you here. To stop, send /stop."
            )
        )
    else:
        ctx.say(_("Hello. This is a private service. If you were given a code, send it here."))
    return END


STATES = {"answer": answer, "welcome": welcome}
