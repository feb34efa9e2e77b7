"""Wake the dispatcher and the scheduler right after a commit, instead of polling for work.

Writers mark the session (``touch``); when its transaction commits, the subscribers of each
touched topic are called once with the earliest time given (a new timer's first action).
A rollback forgets the marks. Other processes are not reached: their own periodic sweep or
idle poll catches what was committed elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

OUTBOX = "outbox"
TIMERS = "timers"
_KEY = "amparo.wakeup"

Callback = Callable[[datetime | None], None]
_subscribers: dict[str, list[Callback]] = {OUTBOX: [], TIMERS: []}


def touch(session: AsyncSession | Session, topic: str, at: datetime | None = None) -> None:
    marks: dict[str, datetime | None] = session.info.setdefault(_KEY, {})
    if topic in marks:
        old = marks[topic]
        marks[topic] = None if old is None or at is None else min(old, at)
    else:
        marks[topic] = at


def subscribe(topic: str, callback: Callback) -> Callable[[], None]:
    """Call ``callback`` after each commit that touched ``topic``; returns the unsubscriber."""
    _subscribers[topic].append(callback)
    return lambda: _subscribers[topic].remove(callback)


def event_setter(loop: asyncio.AbstractEventLoop, flag: asyncio.Event) -> Callback:
    """A callback that sets ``flag`` on ``loop``, whatever thread commits."""

    def wake(_at: datetime | None) -> None:
        loop.call_soon_threadsafe(flag.set)

    return wake


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    marks: dict[str, datetime | None] = session.info.pop(_KEY, {})
    for topic, at in marks.items():
        for callback in list(_subscribers.get(topic, ())):
            callback(at)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous: Any) -> None:
    if previous.parent is None:  # the whole transaction, not a savepoint inside it
        session.info.pop(_KEY, None)
