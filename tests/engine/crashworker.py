"""A worker process for the crash and concurrency tests: the real engine, a logging channel.

python -m tests.engine.crashworker DB_URL KEY_FILE LOG_FILE [WHERE:N]
Each delivery appends one line "key<TAB>address<TAB>text" to LOG_FILE with a single write(2),
so a SIGKILL never leaves half a line, and a line is never lost once send() has returned. The
key is the idempotency key of the outbox row being sent (a channel is not told it: the
dispatcher's send_one is wrapped to hand it over), so a repeat can be told from a duplicate;
the text is JSON (one line whatever it holds).

WHERE:N (optional) is a crash point: the worker kills itself with SIGKILL at the N-th time
it reaches WHERE, so the test can stop it in windows a random kill seldom lands in:
- ``commit``: just before a transaction's COMMIT is sent (its writes are lost);
- ``committed``: just after a COMMIT returned (nothing that follows it happens: no wake-up,
  no send of what it queued or claimed);
- ``claimed``: just after the dispatcher committed its claim of a batch (rows leased as
  being sent, none sent);
- ``sent``: just after a message went out, before its delivery is recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from sqlalchemy import event
from sqlalchemy.orm import Session

from amparo.runtime import Runtime
from amparo.worker import run_engine
from core.config import Settings
from core.crypto import Vault, load_keyring
from core.db import create_engine, sessionmaker
from core.delivery import Attempt
from core.dispatch import Dispatcher, Job
from core.messages import Address, Delivered, Inbox, Outbound

SENDING: ContextVar[str] = ContextVar("sending", default="?")  # the key of the row this task sends
_send_one = Dispatcher.send_one
_claim = Dispatcher.claim
CRASH: dict[str, int] = {}  # the crash point: {WHERE: N}
_reached: Counter[str] = Counter()


def reached(where: str) -> None:
    """Die here if this is the crash point's N-th passage (SIGKILL: no cleanup runs)."""
    if where in CRASH:
        _reached[where] += 1
        if _reached[where] == CRASH[where]:
            os.kill(os.getpid(), signal.SIGKILL)


async def send_one(self: Dispatcher, job: Job, now: datetime, delay: float = 0.0) -> Attempt:
    """Each send runs in a task of its own: the key set here is seen by that send alone."""
    SENDING.set(job.row.idempotency_key if job.row is not None else "?")
    return await _send_one(self, job, now, delay)


Dispatcher.send_one = send_one  # type: ignore[method-assign]


async def claim(self: Dispatcher, now: datetime, top: int | None = None) -> list[Job]:
    jobs = await _claim(self, now, top)
    if jobs:
        reached("claimed")
    return jobs


Dispatcher.claim = claim  # type: ignore[method-assign]


class LoggingChannel:
    name: ClassVar[str] = "standin"

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def run(self, inbox: Inbox) -> None:
        await asyncio.Event().wait()

    async def send(self, to: Address, message: Outbound) -> Delivered:
        line = f"{SENDING.get()}\t{to.value}\t{json.dumps(message.text)}\n"
        os.write(self.fd, line.encode())
        reached("sent")
        return Delivered()


async def main(db_url: str, key_file: str, log_file: str, crash: str | None = None) -> None:
    engine = create_engine(db_url)
    if crash:
        where, _sep, n = crash.partition(":")
        CRASH[where] = int(n)
        event.listen(engine.sync_engine, "commit", lambda _conn: reached("commit"))
        event.listen(Session, "after_commit", lambda _session: reached("committed"))
    rt = Runtime(Settings(), engine, sessionmaker(engine), Vault(load_keyring(Path(key_file))))
    channels = {"standin": LoggingChannel(log_file)}
    # A send lease long enough that a live worker's pass never outlives it, even on a slow
    # machine: the test counts any repeat of a row no dead worker held as a fault.
    await run_engine(rt, channels, interval_s=0.25, lease_s=1.0, send_lease_s=4.0)  # type: ignore[dict-item]


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
