"""Scanning a process's log for what must never be in it (R26)."""

from __future__ import annotations

import re


def leaks(secret: str, log: str) -> bool:
    """Whether ``secret`` appears in ``log``. A number (a PIN, a chat id) counts as a whole
    number only: the PIN "4826" inside a free port (48267) or a timestamp is not that PIN, and
    made the scan fail at random. A PIN or an id written out stands apart from other digits."""
    if secret.isdigit():
        return re.search(rf"(?<![0-9]){re.escape(secret)}(?![0-9])", log) is not None
    return secret in log
