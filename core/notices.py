"""What the engine says to people, in the recipient's language.

Nothing sent to a defender's device or to trusted contacts names the organisation, the word
"panic" or "human rights" (SECURITY.md R9); desk notices are explicit but never name it either,
since a responder's phone can be seized too.
"""

from __future__ import annotations

import base64
import uuid

from core import i18n
from core.messages import Choice, Outbound
from core.models import DO_NOT_CONTACT, AlertKind

SAFE_CHOICE = "safe"  # the key of the one-tap "I'm safe" button; flows then ask for the PIN
SAFE_OUTCOMES = frozenset({"safe", "false_alarm"})  # contacts get an all-clear for these


def _safe_button(locale: str) -> tuple[Choice, ...]:
    _ = i18n.gettext(locale)
    return (Choice(SAFE_CHOICE, _("I'm safe")),)


def pre_reminder(locale: str, minutes: int, *, discreet: bool) -> Outbound:
    ngettext = i18n.ngettext(locale)
    text = ngettext(
        "Your check-in is due in {minutes} minute.",
        "Your check-in is due in {minutes} minutes.",
        minutes,
    ).format(minutes=minutes)
    return Outbound(text=text, choices=_safe_button(locale), sensitive=discreet)


def reminder(locale: str, *, discreet: bool) -> Outbound:
    _ = i18n.gettext(locale)
    text = _("It is time to check in. Choose “I'm safe” and enter your PIN.")
    return Outbound(text=text, choices=_safe_button(locale), sensitive=discreet)


def second_reminder(locale: str, *, discreet: bool) -> Outbound:
    _ = i18n.gettext(locale)
    text = _("You have not checked in yet. Choose “I'm safe” and enter your PIN now.")
    return Outbound(text=text, choices=_safe_button(locale), sensitive=discreet)


def handed_off(locale: str, *, discreet: bool) -> Outbound:
    """After a hand-off between desks (core.handoffs): who follows them changed, and what
    they already sent stayed where it went. Discreet mode names no desk at all."""
    _ = i18n.gettext(locale)
    if discreet:
        text = _("From now on, other people in your group follow your check-ins.")
    else:
        text = _(
            "From now on, another desk follows your check-ins and alerts. "
            "Reports you already sent stay with the desk that received them."
        )
    return Outbound(text=text, sensitive=discreet)


def contact_notice(locale: str, handle: str, *, duress: bool) -> Outbound:
    _ = i18n.gettext(locale)
    if duress:  # someone else may hold their phone: a call or message could endanger them
        text = _(
            "Your contact {handle} may need help. Please do not call or message their phone; "
            "people who can help have been told."
        )
    else:
        text = _(
            "Your contact {handle} asked us to tell you they may need help. "
            "Please try to reach them."
        )
    return Outbound(text=text.format(handle=handle))


def contact_all_clear(locale: str, handle: str) -> Outbound:
    _ = i18n.gettext(locale)
    return Outbound(
        text=_("Good news: {handle} is all right. No further action is needed.").format(
            handle=handle
        )
    )


def desk_alert(
    locale: str,
    kind: AlertKind,
    handle: str,
    *,
    repeat: bool,
    hidden: bool = False,
    careful: bool = False,
) -> Outbound:
    """``hidden``: the defender "deleted their data" under duress (core.defenders.hide).
    ``careful``: not to contact for another alert of theirs (duress, a changed safety
    number) opened before or beside this one."""
    _ = i18n.gettext(locale)
    if repeat:
        text = _("Still not acknowledged: the alert for {handle}. Open the desk now.")
    elif kind is AlertKind.panic:
        text = _("EMERGENCY: {handle} raised an emergency alert. Acknowledge it in the desk.")
    elif kind is AlertKind.duress:
        text = _(
            "EMERGENCY: {handle} may be under coercion. Do NOT contact their device. "
            "Acknowledge it in the desk."
        )
    elif kind is AlertKind.identity_changed:
        text = _(
            "{handle}'s Signal safety number changed: a new phone, or their number in someone "
            "else's hands. Do NOT contact their device before you have verified it is them "
            "another way. Acknowledge it in the desk."
        )
    elif kind is AlertKind.missed_checkin:
        text = _(
            "{handle} missed a check-in and has not answered the reminders. "
            "Acknowledge it in the desk."
        )
    else:
        text = _("{handle} filed an urgent report. Open it in the desk.")
    if hidden:
        text += " " + _(
            "Do NOT contact their device: their data was deleted under duress, and the phone "
            "may be in other hands."
        )
    elif careful:
        text += " " + _(
            "Do NOT contact their device: another open alert of theirs says the phone may be "
            "in other hands."
        )
    elif repeat and kind in DO_NOT_CONTACT:  # what the first notice said, for whoever is paged
        text += " " + _("Do NOT contact their device.")
    return Outbound(text=text.format(handle=handle))


def desk_ack_timeout(locale: str, handle: str, minutes: int) -> Outbound:
    ngettext = i18n.ngettext(locale)
    text = ngettext(
        "The alert for {handle} was acknowledged {minutes} minute ago and is still open.",
        "The alert for {handle} was acknowledged {minutes} minutes ago and is still open.",
        minutes,
    )
    return Outbound(text=text.format(handle=handle, minutes=minutes))


def desk_closed(locale: str, handle: str, outcome: str, *, by_defender: bool = True) -> Outbound:
    _ = i18n.gettext(locale)
    if not by_defender:  # a responder's "safe" is not a check-in
        text = _("The alert for {handle} was closed by the desk.")
    elif outcome == "safe":
        text = _("{handle} checked in: the alert is closed as safe.")
    elif outcome == "false_alarm":
        text = _("{handle} cancelled the alert as a false alarm.")
    else:
        text = _("The alert for {handle} was closed by the desk.")
    return Outbound(text=text.format(handle=handle))


def desk_kept_open(locale: str, handle: str) -> Outbound:
    _ = i18n.gettext(locale)
    return Outbound(
        text=_("{handle} checked in. The alert stays open until a responder verifies it.").format(
            handle=handle
        )
    )


def desk_location(locale: str, handle: str) -> Outbound:
    _ = i18n.gettext(locale)
    return Outbound(
        text=_("{handle} shared a location for the open alert. Open it in the desk.").format(
            handle=handle
        )
    )


def desk_handoff(locale: str, handle: str, step: str) -> Outbound:
    """To a desk's admins: another desk offered them a case (``step`` "offer"), or answered
    their offer ("accept", "decline"). Neither desk is named (core.handoffs)."""
    _ = i18n.gettext(locale)
    if step == "offer":
        text = _(
            "Another desk offers this desk a case: {handle}. An admin accepts or declines it "
            "in the desk, under Hand-offs."
        )
    elif step == "accept":
        text = _("The other desk accepted the case of {handle}: it follows them now.")
    else:
        text = _("The other desk declined the case of {handle}: it stays with this desk.")
    return Outbound(text=text.format(handle=handle))


def desk_note(locale: str, handle: str) -> Outbound:
    """The defender wrote something for their open alert: never what (it is sealed to the
    organisation's key, and a responder's phone can be seized too)."""
    _ = i18n.gettext(locale)
    return Outbound(
        text=_("{handle} added a message to their alert. Open it in the desk.").format(
            handle=handle
        )
    )


# --- the desk's responder group ------------------------------------------------------------

GROUP_ACK, GROUP_SAFE = "ack", "safe"  # what a group message asks for, by button or by word


def short_code(alert_id: uuid.UUID) -> str:
    """Six characters of base32 from the alert id: what responders type in the group."""
    return base64.b32encode(alert_id.bytes).decode()[:6]


def group_choice(verb: str, alert_id: uuid.UUID) -> str:
    """A group button's meaning, kept on the server behind an opaque token."""
    return f"desk:{verb}:{alert_id.hex}"


def group_pressed(choice: str | None) -> tuple[str, str] | None:
    """(verb, alert id in hex) behind a group button's token, or None."""
    parts = (choice or "").split(":")
    if len(parts) != 3 or parts[0] != "desk" or parts[1] not in (GROUP_ACK, GROUP_SAFE):
        return None
    return parts[1], parts[2]


def desk_group(
    locale: str, channel: str, *, alert_id: uuid.UUID, priority: int, base: Outbound
) -> Outbound:
    """A desk notice as posted to the responder group: priority and short code added, and
    the way to act on it (buttons on Telegram; on Signal, a reply with the code)."""
    _ = i18n.gettext(locale)
    code = short_code(alert_id)
    lines = [
        base.text,
        _("Priority P{priority} · code {code}").format(priority=priority, code=code),
    ]
    if channel != "telegram":
        lines.append(
            _("Reply ACK {code} to acknowledge, or SAFE {code} to resolve it as safe.").format(
                code=code
            )
        )
        return Outbound(text="\n".join(lines))
    choices = (
        Choice(group_choice(GROUP_ACK, alert_id), _("Acknowledge")),
        Choice(group_choice(GROUP_SAFE, alert_id), _("Resolve: safe")),
    )
    return Outbound(text="\n".join(lines), choices=choices)


def group_base(post: Outbound, channel: str) -> Outbound:
    """The desk notice a group post was made from (``desk_group``), for a responder's own
    chat when the group cannot get it: without the lines that only work in the group."""
    added = 1 if channel == "telegram" else 2
    return Outbound(text="\n".join(post.text.split("\n")[:-added]))


# Where an alert changed, when not in the group: "desk" (a responder in the dashboard), "api"
# (a token: the desk API, an external case system), "defender" (a check-in or a cancel). The
# group sees only the handle and the short code, as in the ladder's posts.


def group_acknowledged(
    locale: str, channel: str, *, alert_id: uuid.UUID, handle: str, by: str
) -> Outbound:
    """The alert was acknowledged elsewhere; on Telegram with the Resolve button that the
    group's own acknowledgement carries too."""
    _ = i18n.gettext(locale)
    if by == "api":
        text = _("Alert {code} ({handle}) was acknowledged through the desk API.")
    else:
        text = _("Alert {code} ({handle}) was acknowledged by a responder in the desk.")
    text = text.format(code=short_code(alert_id), handle=handle)
    if channel != "telegram":
        return Outbound(text=text)
    resolve = Choice(group_choice(GROUP_SAFE, alert_id), _("Resolve: safe"))
    return Outbound(text=text, choices=(resolve,))


def group_resolved(
    locale: str, *, alert_id: uuid.UUID, handle: str, by: str, outcome: str
) -> Outbound:
    """The alert was closed elsewhere: nothing is left to do in the group."""
    _ = i18n.gettext(locale)
    if by == "defender" and outcome == "safe":
        text = _("{handle} checked in: alert {code} is closed as safe.")
    elif by == "defender" and outcome == "false_alarm":
        text = _("{handle} cancelled alert {code} as a false alarm.")
    else:
        if by == "api":
            text = _("Alert {code} ({handle}) was resolved through the desk API.")
        else:
            text = _("Alert {code} ({handle}) was resolved by a responder in the desk.")
        outcomes = {
            "safe": _("Outcome: safe."),
            "false_alarm": _("Outcome: false alarm."),
            "intervention": _("Outcome: intervention."),
            "other": _("Outcome: other."),
        }
        text = f"{text} {outcomes.get(outcome, outcomes['other'])}"
    return Outbound(text=text.format(code=short_code(alert_id), handle=handle))
