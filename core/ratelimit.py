"""Per-channel and per-recipient send rates (Telegram: 30 messages/s per bot, ~1/s per chat)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    per_channel: float | None  # messages per second through the whole channel (the bot)
    per_recipient: float | None  # messages per second to one chat


DEFAULT_LIMITS = {
    "telegram": Limit(per_channel=30.0, per_recipient=1.0),
    "signal": Limit(per_channel=10.0, per_recipient=1.0),
}


def limits(telegram_rate: float = 30.0, chat_rate: float = 1.0) -> dict[str, Limit]:
    """The default limits with Telegram's bot-wide rate (``AMPARO_TELEGRAM_RATE``) and every
    channel's rate to one chat (``AMPARO_CHAT_RATE``) set."""
    found = {**DEFAULT_LIMITS, "telegram": Limit(telegram_rate, chat_rate)}
    return {name: Limit(lim.per_channel, chat_rate) for name, lim in found.items()}


def configured() -> dict[str, Limit]:
    """The limits the settings ask for (the environment and ``.env``); defaults if invalid."""
    from core.config import Settings

    try:
        settings = Settings()
        return limits(settings.telegram_rate, settings.chat_rate)
    except ValueError:  # pydantic's ValidationError: the process start reports it already
        return dict(DEFAULT_LIMITS)


class Bucket:
    """A token bucket holding at most one second's worth of sends."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.tokens, self.at = rate, clock()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def available(self, horizon: float = 0.0) -> float:
        """How many sends could start within ``horizon`` seconds."""
        self._refill()
        return self.tokens + horizon * self.rate

    def reserve(self) -> float:
        """Take the next slot, now or later: the seconds to wait before sending."""
        self._refill()
        self.tokens -= 1
        return max(0.0, -self.tokens / self.rate)

    def give_back(self) -> None:
        """Undo ``reserve`` (the send was deferred instead)."""
        self.tokens += 1

    async def take(self) -> None:
        async with self.lock:  # FIFO: earlier (higher priority) callers go first
            while True:
                self._refill()
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class Spacing:
    """At most ``rate`` sends per second to one recipient; callers defer rather than wait."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.gap, self.clock = 1.0 / rate, clock
        self.next: dict[object, float] = {}

    def wait(self, recipient: object) -> float:
        """0 and the slot is taken, or how many seconds until it frees up."""
        now = self.clock()
        if len(self.next) > 10_000:  # forget recipients whose slot is long free
            self.next = {k: v for k, v in self.next.items() if v > now}
        free = self.next.get(recipient, 0.0)
        if free > now:
            return free - now
        self.next[recipient] = now + self.gap
        return 0.0


class Allowance:
    """Per key (a chat): up to ``burst`` events at once, then ``per_minute`` a minute
    (SECURITY.md R21, ingress). In memory, per process; times are the caller's clock, in
    seconds. At most ``keys`` keys are remembered: beyond, only the half most spent (or told
    of a refusal lately) are kept (a forgotten chat only gets its whole allowance back)."""

    def __init__(
        self, burst: int, per_minute: float, *, told_every: float = 600.0, keys: int = 100_000
    ) -> None:
        self.burst, self.rate, self.keys = float(burst), per_minute / 60, keys
        self.told_every = told_every
        self._left: dict[object, tuple[float, float, float]] = {}  # key: tokens, at, told at

    def take(self, key: object, now: float) -> bool:
        """Whether one more event of ``key`` is allowed now (it is counted)."""
        tokens, at, told = self._left.get(key, (self.burst, now, -math.inf))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1
        self._left[key] = (tokens - 1 if allowed else tokens, now, told)
        if len(self._left) > self.keys:
            self._forget(now)
        return allowed

    def tell(self, key: object, now: float) -> bool:
        """Whether to tell ``key`` of a refusal just made: once in ``told_every`` seconds (a
        flood at the allowance's pace is not answered with a notice for each)."""
        tokens, at, told = self._left.get(key, (self.burst, now, -math.inf))
        if now - told < self.told_every:
            return False
        self._left[key] = (tokens, at, now)
        return True

    def _forget(self, now: float) -> None:
        """Down to half of ``keys``: the most spent allowances and recent notices are kept."""

        def left(v: tuple[float, float, float]) -> float:
            told = now - v[2] < self.told_every
            return -1.0 if told else min(self.burst, v[0] + (now - v[1]) * self.rate)

        kept = sorted(self._left.items(), key=lambda kv: left(kv[1]))[: self.keys // 2]
        self._left = {k: v for k, v in kept if left(v) < self.burst}
