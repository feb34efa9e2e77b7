"""``amparo chat``: play a defender in the terminal, with the real engine and database.

The console channel reads one message per line; the flow engine handles it; the dispatcher
delivers the replies (and anything else queued for console addresses, such as a trusted
contact's alert) before the next line is read. Timers are swept every second, so reminders
and escalations happen while you type. ``--org`` issues a fresh invite code to start with,
unless the address is already a defender's (an unused code would stay valid for days).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from amparo.runtime import open_runtime
from amparo.worker import owner_id
from bot.console import Console
from core import logs
from core.accounts import find_org
from core.config import Settings
from core.db import transaction
from core.defenders import address_index, create_invite, find_address
from core.dispatch import Dispatcher
from core.i18n import operator_gettext as _
from core.models import utcnow
from core.sweep import Sweep
from flows.engine import Engine, housekeeping


async def chat(settings: Settings, *, org: str | None, address: str, language: str | None) -> None:
    logs.configure(settings.log_level)  # to stderr, redacted; the chat itself is on stdout
    async with open_runtime(settings) as rt:
        console = Console(address=address, language=language)
        if org is not None:
            async with transaction(rt.sessions) as session:
                found = await find_org(session, org)
                index = address_index(rt.vault, "console", address)
                mine = await find_address(session, "console", index)
                code = None
                if mine is None or mine.defender_id is None:  # a defender's needs no new one
                    _row, code = await create_invite(
                        session, rt.vault, org_id=found.id, purpose="defender", now=utcnow()
                    )
            if code is not None:
                console.print(_("Send this invite code to start: {code}").format(code=code))
        owner = owner_id()
        dispatcher = Dispatcher(rt.sessions, rt.vault, {"console": console}, owner=owner)
        sweep = Sweep(rt.sessions, rt.vault, owner=owner)
        lock = asyncio.Lock()
        stop = asyncio.Event()

        async def deliver() -> None:
            async with lock:  # one delivery at a time: what is printed stays in order
                await sweep.run(utcnow())
                await housekeeping(rt.sessions, utcnow())
                await dispatcher.drain(utcnow())

        async def tick() -> None:
            while not stop.is_set():
                await deliver()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

        console.after = deliver
        ticker = asyncio.create_task(tick())
        if sys.stdin.isatty():
            console.print(_("Type a message and press Enter; Ctrl-D to quit."))
        try:
            await console.run(Engine(rt.sessions, rt.vault).handle)
        finally:
            stop.set()
            await ticker
            await deliver()
