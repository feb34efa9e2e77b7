"""Sliding-window rate limits kept in memory, keyed per account, address or responder.

There is deliberately no global key: throttling one account or one address never locks out
the others (SECURITY.md R19, R21). Limits live in the process; with several API processes each
enforces its own window, which multiplies the allowance by the number of processes.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

MAX_KEYS = 100_000  # memory bound: the stalest keys are forgotten first


@dataclass
class Throttle:
    limit: int
    window_s: float
    _hits: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict, repr=False)

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > MAX_KEYS:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        return hits

    def blocked(self, key: str, now: float) -> bool:
        return len(self._recent(key, now)) >= self.limit

    def hit(self, key: str, now: float) -> bool:
        """Count one event; False when the key had already reached its limit."""
        hits = self._recent(key, now)
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def retry_after(self, key: str, now: float) -> int:
        hits = self._recent(key, now)
        if len(hits) < self.limit:
            return 0
        return max(1, int(hits[0] + self.window_s - now) + 1)

    def reset(self, key: str) -> None:
        self._hits.pop(key, None)


@dataclass
class Limits:
    """The desk API's limits; tests may build tighter ones."""

    login_account: Throttle = field(default_factory=lambda: Throttle(5, 15 * 60))
    login_address: Throttle = field(default_factory=lambda: Throttle(30, 15 * 60))
    export: Throttle = field(default_factory=lambda: Throttle(10, 60 * 60))
    invite: Throttle = field(default_factory=lambda: Throttle(30, 60 * 60))
