"""Pure helpers of the Signal channel (bot.signal): a place typed or pasted, the numbered
options Signal shows for buttons, and what a failed send to signal-cli-rest-api means.

signal-cli-rest-api answers an unregistered recipient (permanent) and a rate limit (it passes:
retried after ``RATE_LIMIT_WAIT_S``) in its error body; any other failure is a 400, signal-cli's
network failures ("Failed to send message", "IOException") included: those are retried, never
permanent.
"""

from __future__ import annotations

import re

from core.messages import IDENTITY_CHANGED, DeliveryError, Location, Outbound

_PAIR = r"(-?\d{1,2}\.\d+)\s*(?:,|%2C)\s*(-?\d{1,3}\.\d+)"
# Only a message that is a coordinate pair, a geo: URI or a maps link: ordinary text with two
# decimals ("between 10.30, 11.45", "12.50, 3.75 more") is not a place.
_WHOLE = re.compile(rf"\s*{_PAIR}\s*")
_IN_LINK = re.compile(rf"(?:geo:|https?://\S*?[@=/]){_PAIR}", re.IGNORECASE)


_STATUS_429 = re.compile(r"(?<!\d)429(?!\d)")
# Signal's rate limits (an account's sends, a proof-of-work challenge) pass, but
# signal-cli-rest-api's 429 says nothing of when: wait long, never block the address. Longer
# than a P0/P1 notice's patience, so it goes to the person's next address at once if they have
# one (core.delivery); otherwise it is tried here again until core.delivery.given_up.
RATE_LIMIT_WAIT_S = 600.0


def parse_location(text: str | None) -> Location | None:
    """Coordinates typed or pasted as a maps link ("52.52,13.405", geo:…, …/@52.5,13.4,…)."""
    match = _WHOLE.fullmatch(text or "") or _IN_LINK.search(text or "")
    if match is None:
        return None
    lat, lon = float(match.group(1)), float(match.group(2))
    return Location(lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def render(message: Outbound) -> str:
    """Signal has no buttons: choices become numbered options (answered by number or word)."""
    lines = [message.text] if message.text else []
    lines += [f"{i}. {choice.label}" for i, choice in enumerate(message.choices, 1)]
    return "\n".join(lines)


def delivery_error(status: int, body: str) -> DeliveryError:
    text = body.lower()
    if "untrusted identit" in text:  # signal-cli's answer once a safety number changed
        return DeliveryError(IDENTITY_CHANGED, permanent=True)
    if "unregistered" in text or "not registered" in text:
        return DeliveryError("unregistered", permanent=True)
    limited = any(s in text for s in ("rate limit", "ratelimit", "proof required", "captcha"))
    if status == 429 or limited or _STATUS_429.search(text):  # not a 429 inside a number
        return DeliveryError("rate limited", retry_after=RATE_LIMIT_WAIT_S)  # transient
    if status >= 500:
        return DeliveryError(f"signal-cli {status}")
    # Anything else is no verdict on the recipient: signal-cli-rest-api answers every error
    # that is not a rate limit with a 400, a network failure between signal-cli and Signal
    # ("Failed to send message", "IOException") included. Retried as usual, never blocking
    # the address: a reminder or an alert's confirmation is not dropped on a network blip.
    return DeliveryError(f"rejected {status}")
