"""The desk pages' words for the server's identifiers: audit actions and their detail keys,
webhook event types and the class of error a delivery last met. The identifiers stay as they
are in the database and in /api/v1 (stable contracts); a page shows these words beside them.
An identifier not listed here (a newer one) shows as it is written."""

from __future__ import annotations

import re
from collections.abc import Callable

from api.errors import N_

# Every action the code writes to the audit trail (tests/api/test_dashboard_audit_words.py
# scans the source for them): what the actor did, as an admin scans it.
ACTIONS = {
    "alert.view": N_("Opened an alert"),
    "alert.acknowledge": N_("Acknowledged an alert"),
    "alert.resolve": N_("Resolved an alert"),
    "alert.keep_open": N_("Kept an alert open"),
    "alert.assign": N_("Assigned an alert"),
    "alert.note": N_("Added a sealed note to an alert"),
    "alert.reopen": N_("Reopened an alert"),
    "auth.login": N_("Logged in"),
    "auth.login_failed": N_("Failed login"),
    "auth.logout": N_("Logged out"),
    "auth.password_change": N_("Changed their password"),
    "broadcast.send": N_("Sent a broadcast"),
    "rollcall.start": N_("Started a roll-call"),
    "rollcall.close": N_("Closed a roll-call"),
    "defender.view": N_("Opened a defender's page"),
    "handoff.offer": N_("Offered a case to another desk"),
    "handoff.accept": N_("Accepted a case from another desk"),
    "handoff.decline": N_("Declined a case from another desk"),
    "handoff.withdraw": N_("Withdrew a case offered to another desk"),
    "defender.pause": N_("Paused a defender's check-ins"),
    "defender.resume": N_("Resumed a defender's check-ins"),
    "defender.restore": N_("Restored a defender hidden under duress"),
    "defender.policy": N_("Changed a defender's escalation policy"),
    "invite.create": N_("Created an invite code"),
    "invite.revoke": N_("Revoked an invite code"),
    "desk_group.link_code": N_("Made a code to link the responder group chat"),
    "desk_group.link": N_("Linked the responder group chat"),
    "desk_group.unlink": N_("Unlinked the responder group chat"),
    "desk_group.taken": N_("The responder group chat was linked to another organisation"),
    "desk_group.language": N_("Changed the responder group chat's language"),
    "responder.create": N_("Created a responder account"),
    "responder.role": N_("Changed a responder's role"),
    "responder.active": N_("Enabled or disabled a responder account"),
    "responder.link_code": N_("Made a code to link a responder's chat"),
    "responder.chat_link": N_("Linked a responder's chat"),
    "roster.on_duty": N_("Put on duty"),
    "roster.off_duty": N_("Taken off duty"),
    "org.create": N_("Created the organisation"),
    "org.key_change": N_("Changed the organisation key"),
    "org.keys_view": N_("Downloaded the organisation's protected keys"),
    "keys.rotate": N_("Rotated the server's key-encryption key"),
    "keys.rotate_index": N_("Rotated the key of the addresses' blind indexes"),
    "policy.save": N_("Saved an escalation policy"),
    "policy.delete": N_("Deleted an escalation policy"),
    "report.view_sealed": N_("Opened a sealed report"),
    "report.view_evidence": N_("Opened a report's evidence"),
    "report.review": N_("Reviewed a report"),
    "report.export": N_("Exported reports"),
    "token.create": N_("Created an API token"),
    "token.revoke": N_("Revoked an API token"),
    "webhook.add": N_("Added a webhook endpoint"),
    "webhook.move": N_("Moved a webhook endpoint to a new URL"),
    "webhook.update": N_("Paused or resumed a webhook endpoint"),
    "webhook.delete": N_("Deleted a webhook endpoint"),
    "webhook.rotate": N_("Rotated a webhook endpoint's secret"),
    "webhook.replay": N_("Replayed a webhook delivery"),
}
# The keys of an entry's detail (ids and metadata, never content: core.audit.record); the
# values show as they are. "action:key" words one key for one action.
DETAILS = {
    "channel": N_("Channel"),
    "count": N_("Count"),
    "fields": N_("Fields"),
    "from": N_("Before"),
    "to": N_("After"),
    "alert.assign:to": N_("Assigned to"),
    "language": N_("Language"),
    "new": N_("New version"),
    "old": N_("Old version"),
    "note": N_("Note"),
    "outcome": N_("Outcome"),
    "policy": N_("Policy"),
    "reason": N_("Reason"),
    "recipients": N_("Recipients"),
    "role": N_("Role"),
    "scopes": N_("Scopes"),
    "version": N_("Version"),
}
# The values of some details, in words (api/audit_view.py; the writers: grep audit.record).
ROLES = {"admin": N_("Administrator"), "responder": N_("Responder"), "observer": N_("Observer")}
ACTIVE = {"True": N_("Account enabled"), "False": N_("Account disabled")}  # responder.active
REASONS = {  # auth.login_failed: core.auth.AuthError's code
    "unknown": N_("Unknown username"),
    "password": N_("Wrong password"),
    "disabled": N_("Account disabled"),
    "totp": N_("Wrong two-factor code"),
    "totp_reused": N_("Two-factor code already used"),
}
VERIFICATION_FIELD = N_("Verification")  # report.review's fields, with api.pages.REPORT_FIELDS
NOBODY = N_("Nobody")  # alert.assign to no one
ROLLCALL = N_("Roll-call")
INVITE = N_("Invite code")  # an audit entry's target: one of the organisation's invite codes
CHANNELS = {"telegram": "Telegram", "signal": "Signal"}  # names, in every language
# What each webhook event type (core.webhook_events.EVENTS, a contract value shown as it is) means.
WEBHOOK_EVENTS = {
    "alert.triggered": N_("An alert was raised"),
    "alert.escalated": N_("An alert went to its next escalation step"),
    "alert.acknowledged": N_("An alert was acknowledged"),
    "alert.resolved": N_("An alert was resolved"),
    "report.filed": N_("A report was filed"),
    "rollcall.closed": N_("A roll-call closed"),
}
# The class of error a webhook delivery last met (OutboxMessage.last_error, written by
# core.webhooks.post, core.dispatch and core.delivery): a class, never content.
TIMED_OUT = N_("The endpoint did not answer in time")
DELIVERY_ERRORS = {
    "webhook TimeoutError": TIMED_OUT,  # core.webhooks.post: the HTTP client's timeout
    "TimeoutError": TIMED_OUT,  # core.dispatch: the send took longer than its limit
    "webhook not a public address": N_("Refused: the endpoint is not at a public address"),
    "no payload": N_("Nothing left to send"),
    "paused": N_("Given up: held too long while the endpoint was paused"),  # core.delivery
    "webhook_gone": N_("The endpoint was deleted"),
    "withdrawn": N_("Withdrawn: no longer to be sent"),  # core.messages.WITHDRAWN
}
HTTP_STATUS = re.compile(r"webhook HTTP (\d{3})")
CONNECTION = re.compile(r"webhook [A-Z][A-Za-z]*Error")  # an aiohttp.ClientError's class
ANSWERED = N_("The endpoint answered with HTTP status %(status)s")
UNREACHABLE = N_("The connection to the endpoint failed")


def delivery_error(raw: str | None, say: Callable[[str], str]) -> str | None:
    """A delivery's ``last_error`` in the responder's language (``say``), None for an error
    class this list does not know (the page shows it as it is written)."""
    if not raw:
        return None
    if raw in DELIVERY_ERRORS:
        return say(DELIVERY_ERRORS[raw])
    if status := HTTP_STATUS.fullmatch(raw):
        return say(ANSWERED) % {"status": status.group(1)}
    if CONNECTION.fullmatch(raw):
        return say(UNREACHABLE)
    return None
