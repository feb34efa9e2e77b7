"""Defenders' PINs: a cancel PIN and a different duress PIN (SECURITY.md R8, R10).

A PIN where one is required has three outcomes. The cancel PIN is ``ok``. The duress PIN is
``duress``: the caller shows exactly what ``ok`` shows and silently raises a duress alert. A
wrong PIN is ``wrong`` until ``WRONG_LIMIT`` in a row, then ``duress`` too: a captor trying PINs
never sees a lockout, and ends up "succeeding" into a silent alert. "In a row" means each
within ``WRONG_WINDOW`` of the one before: a captor's tries come minutes apart, while a
defender's typos days apart must not add up to a duress alert that the screen, showing "noted
that you are safe", would never let them suspect. Once the limit is reached the count stays
until the cancel PIN resets it.

Both hashes are always checked, so the three outcomes take the same time; checking costs two
Argon2id runs, which is why the engine calls ``verdict`` in a thread, outside any transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from core.models import Defender
from core.security import hash_pin, verify_pin

WRONG_LIMIT = 3
WRONG_WINDOW = timedelta(hours=24)
# Besides the patterns ``guessable`` finds, among the most used four-digit PINs in leaked sets.
COMMON = frozenset({"1004", "1122", "2000", "2001", "1998", "1999", "1990", "2580", "0852"})


class Verdict(StrEnum):
    ok = "ok"
    duress = "duress"
    wrong = "wrong"


def guessable(pin: str) -> bool:
    """Whether ``pin`` (ASCII digits) is among the first a captor would try (abuse case 5):
    one digit repeated (0000), a run up or down (1234, 9876, 7890), two digits repeated
    (1212, 6969), or one of ``COMMON``. Neither new PIN may be: a captor who knew that only
    the cancel PIN is held to it would take a guessable PIN for the duress one (R8)."""
    steps = {(int(b) - int(a)) % 10 for a, b in zip(pin, pin[1:], strict=False)}
    repeated_pair = pin == pin[:2] * (len(pin) // 2)
    return steps in ({0}, {1}, {9}) or repeated_pair or pin in COMMON


def check(cancel_hash: str | None, duress_hash: str | None, pin: str, pepper: bytes) -> Verdict:
    """Pure and slow (Argon2id twice): which PIN this is, before counting failures."""
    is_cancel = cancel_hash is not None and verify_pin(cancel_hash, pin, pepper)
    is_duress = duress_hash is not None and verify_pin(duress_hash, pin, pepper)
    if is_duress:
        return Verdict.duress
    return Verdict.ok if is_cancel else Verdict.wrong


def count(defender: Defender, raw: Verdict, now: datetime) -> Verdict:
    """Apply the failure counter: the ``WRONG_LIMIT``-th wrong PIN in a row is duress."""
    if raw is Verdict.ok:
        defender.failed_pins = 0
        return raw
    if raw is Verdict.wrong:
        last = defender.pin_failed_at
        if defender.failed_pins < WRONG_LIMIT and (last is None or now - last > WRONG_WINDOW):
            defender.failed_pins = 0  # the earlier ones were too long ago to be a captor's
        defender.failed_pins += 1
        defender.pin_failed_at = now
        if defender.failed_pins >= WRONG_LIMIT:
            return Verdict.duress
    return raw


def set_pins(defender: Defender, pepper: bytes, *, cancel: str | None, duress: str | None) -> None:
    """Store new PIN hashes (slow: Argon2id); None leaves that PIN unchanged."""
    if cancel is not None:
        defender.cancel_pin_hash = hash_pin(cancel, pepper)
    if duress is not None:
        defender.duress_pin_hash = hash_pin(duress, pepper)
    defender.failed_pins = 0
