"""Responders in chat: linking a private chat, and the desk's responder group.

    private chat --"/desk CODE" (Signal: "desk CODE")--> the chat is the responder's address
    group --"/desk CODE" (an admin's group code)--> the organisation's responder group
    group --button, "ACK code" or "SAFE code"--> acknowledge / resolve (linked responders only)

A wrong, expired or used code gets exactly what a wrong invite code gets (no oracle). In a
group, nothing but these commands is ever read or stored; the engine drops the rest before
touching the database. Not a conversation: no state is kept between messages.
"""

from __future__ import annotations

from collections.abc import Callable

from core import callbacks, defenders, desk_chat, i18n, notices
from core.desk_chat import Command
from core.messages import Choice, Inbound, Outbound
from core.models import Alert, AlertState, Defender, Priority, Responder
from core.text import fold
from flows import store
from flows.context import Context

NAME = "desk"


def command(inbound: Inbound) -> Command | None:
    return desk_chat.parse(fold(inbound.text)) if inbound.text else None


def wanted(inbound: Inbound) -> bool:
    """Whether a group event is for us at all (decided before any database access)."""
    return bool(inbound.callback or inbound.moved_to) or command(inbound) is not None


# --- a private chat --------------------------------------------------------------------------


def private_code(typed: str) -> str | None:
    """The link code in "/desk CODE" or "desk CODE" (already folded), else None."""
    found = desk_chat.parse(typed)
    return found.code if found is not None and found.verb == "desk" else None


async def link_private(ctx: Context, code: str) -> bool:
    """Link this chat to the code's responder and say so; False for a code that is no good
    (the caller then answers exactly as to a wrong invite code)."""
    if ctx.address.defender_id is not None or ctx.inbound.forwarded or ctx.inbound.edited:
        return False  # a defender's chat (a hidden one's too): desk pages never go there
    responder = await desk_chat.link_responder(
        ctx.session, ctx.vault, code=code, address=ctx.address, now=ctx.now
    )
    if responder is None:
        return False
    ctx.forget_message()
    ctx.say(
        ctx._(
            "This chat is now linked to your desk account. Alerts for you will arrive here, "
            "and you can act on them in the desk's responder group."
        )
    )
    return True


# --- the responder group ---------------------------------------------------------------------


async def handle_group(event: store.Event) -> None:
    """One command or button press in a group chat, in the engine's transaction."""
    inbound = event.inbound
    found = command(inbound)
    if inbound.edited or inbound.forwarded:
        return
    if inbound.moved_to is not None:
        await _moved(event, inbound.moved_to)
        return
    if found is None and not inbound.callback:
        return
    if not await store.mark_seen(event):
        return
    _ = i18n.gettext(i18n.negotiate([inbound.language]))
    session, vault, now = event.session, event.vault, event.now
    if found is not None and found.verb == "desk":
        org_id = await desk_chat.link_group(
            session,
            vault,
            code=found.code,
            channel=inbound.channel,
            group=inbound.address,
            now=now,
        )
        if org_id is None:  # exactly what a wrong invite code gets
            text = _("Hello. This is a private service. If you were given a code, send it here.")
        else:
            text = _(
                "This group is now the desk's responder group: alerts will be posted here, and "
                "responders who linked their own chat with the bot can act on them."
            )
        await _answer(event, Outbound(text))
        return
    group = await desk_chat.group_of(session, vault, inbound.channel, inbound.address)
    if group is None:
        return  # not a responder group: silence
    if group.locale:  # the language the desk chose for the group, else the sender's
        _ = i18n.gettext(group.locale)
    responder = await desk_chat.acting_responder(
        session, vault, org_id=group.org_id, channel=inbound.channel, sender=inbound.sender
    )
    if responder is None:
        await _answer(event, Outbound(_("Sorry, only the desk's responders can do that.")))
        return
    if found is not None:
        verb, code = found.verb, found.code.upper()
        alert = await desk_chat.open_alert(session, group.org_id, code=code)
    else:
        chat = callbacks.Chat(inbound.channel, inbound.address, event.index)
        choice = await callbacks.redeem(
            session, vault, token=inbound.callback or "", chat=chat, now=now
        )
        pressed = notices.group_pressed(choice)
        if pressed is None:
            await _answer(event, Outbound(_("This button no longer works.")))
            return
        verb, alert_id = pressed
        alert = await desk_chat.open_alert(session, group.org_id, alert_id=alert_id)
        code = "" if alert is None else notices.short_code(alert.id)
    if alert is None:
        text = _("No open alert has that code.")
        await _answer(event, Outbound(text))
        return
    if verb == notices.GROUP_ACK and alert.state is AlertState.acknowledged:
        text = _("Alert {code} is already acknowledged.").format(code=code)
        await _answer(event, Outbound(text))  # by an earlier press, or elsewhere (said so)
        return
    await desk_chat.act(session, vault, alert=alert, responder=responder, verb=verb, now=now)
    await _answer(event, await _done(event, alert, responder, verb, code, _))


async def _moved(event: store.Event, to: str) -> None:
    """The responder group got a new chat id: it stays the group, and what is queued for it
    goes to the new chat. Any other group's move is none of our business."""
    session, channel = event.session, event.inbound.channel
    if await desk_chat.group_of(session, event.vault, channel, event.inbound.address) is None:
        return
    if await store.mark_seen(event):
        moved = await defenders.move_address(session, event.vault, channel, event.index, to)
        if moved is not None:
            await callbacks.move(session, old=event.index, new=moved.blind_index)


async def _done(
    event: store.Event,
    alert: Alert,
    responder: Responder,
    verb: str,
    code: str,
    _: Callable[[str], str],
) -> Outbound:
    defender = await event.session.get(Defender, alert.defender_id)
    handle = defender.handle if defender is not None else "?"
    values = {"name": responder.username, "code": code, "handle": handle}
    if verb == notices.GROUP_SAFE:
        return Outbound(_("{name} resolved alert {code} ({handle}) as safe.").format(**values))
    text = _("{name} acknowledged alert {code} ({handle}).").format(**values)
    if event.inbound.channel != "telegram":
        return Outbound(text)
    resolve = Choice(notices.group_choice(notices.GROUP_SAFE, alert.id), _("Resolve: safe"))
    return Outbound(text, choices=(resolve,))


async def _answer(event: store.Event, message: Outbound) -> None:
    """Reply in the group (creating its address row only when a code was sent there)."""
    inbound = event.inbound
    address = await desk_chat.address_of(
        event.session, event.vault, inbound.channel, inbound.address
    )
    await store.reply(event, address, message, priority=Priority.P1, recipient="group")
