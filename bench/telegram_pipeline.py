"""Telegram end to end: stand-in -> PTB -> flows -> database -> outbox -> sendMessage, on SQLite.

Usage: python bench/telegram_pipeline.py [--updates 2000] [--panics 50] [--broadcast 10000]

Three measurements in one run, everything on 127.0.0.1 in one process and one event loop (the
Bot API stand-in from tests/standins, the real python-telegram-bot, the real flow engine, a
fresh SQLite file, the real outbox dispatcher):

1. Throughput: ``--updates`` defenders each send ``/checkin`` (all queued at the stand-in at
   once); the clock stops when every defender has the check-in menu (a ``sendMessage`` with
   nine buttons, each an opaque callback token written to the database). The bot-wide send
   rate is raised to ``--rate-throughput`` so that this measures Amparo, not the limiter.
   Baseline, same run, same stand-in code: a bare PTB ``Application`` echo bot (polling, one
   ``sendMessage`` per update, no database).
2. Panic -> desk webhook, unloaded: ``--panics`` defenders send ``/panic`` one after another;
   latency from the update being queued at the stand-in to the signed ``alert.triggered``
   webhook arriving at a local receiver.
3. The same while a ``--broadcast``-message P3 broadcast drains at ``--rate-broadcast``
   messages/s (Telegram's default 30/s); the broadcast is not waited for to the end.

The last line is one JSON object: updates_per_s, echo_updates_per_s, ratio_vs_echo,
panic_to_desk_p50_ms, panic_to_desk_p99_ms, panic_to_desk_p99_during_broadcast_ms, plus the
broadcast rate observed meanwhile, and the process's CPU milliseconds per update in the two
throughput runs (``cpu_ms_per_update``, ``echo_cpu_ms_per_update``: everything runs in this one
process, the stand-in included, so they are steadier than the rates on a shared machine).
Timings on a shared machine are noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bot.telegram import Telegram
from core import ratelimit, webhooks
from core.crypto import Keyring, Vault, generate_org_keypair
from core.db import create_engine, sessionmaker, transaction
from core.defenders import new_address
from core.dispatch import Dispatcher
from core.messages import Outbound
from core.models import Base, Defender, DefenderStatus, Organisation, Priority, utcnow
from core.outbox import Item, enqueue_many
from flows.engine import Engine
from tests.standins.telegram_api import Call, TelegramStandIn

Sessions = async_sessionmaker[AsyncSession]
FIRST_CHAT = 710_000_000


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def chat(i: int) -> int:
    return FIRST_CHAT + i


async def seed(sessions: Sessions, vault: Vault, n: int, hook_url: str) -> list[uuid.UUID]:
    """N active defenders reached on Telegram, and the desk's webhook; their address ids."""
    async with transaction(sessions) as s:
        org = Organisation(id=uuid.uuid4(), name="Bench", public_key=generate_org_keypair()[0])
        s.add(org)
        await s.flush()
        await webhooks.add(s, vault, org_id=org.id, url=hook_url)
        people = [
            Defender(
                id=uuid.uuid4(), org_id=org.id, handle=f"bench-{i}", status=DefenderStatus.active
            )
            for i in range(n)
        ]
        s.add_all(people)
        await s.flush()
        addresses = []
        for i, defender in enumerate(people):
            address = new_address(vault, "telegram", str(chat(i)))
            address.defender_id = defender.id
            addresses.append(address)
        s.add_all(addresses)
    return [a.id for a in addresses]


class Receiver:
    """The external desk: records when each webhook arrives."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.runner = web.AppRunner(web.Application(), access_log=None)
        self.port = 0

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            await request.read()
            self.arrivals.append(time.perf_counter())
            return web.Response(status=204)

        self.runner.app.router.add_post("/desk", hook)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@asynccontextmanager
async def amparo(
    api: TelegramStandIn, sessions: Sessions, vault: Vault, rate: float
) -> AsyncIterator[None]:
    channel = Telegram(token=api.token, api_url=api.base_url, sessions=sessions, vault=vault)
    engine = Engine(sessions, vault)
    async with webhooks.client() as http:
        dispatcher = Dispatcher(
            sessions,
            vault,
            {"telegram": channel},
            owner="bench",
            http=http,
            limits=ratelimit.limits(rate),
        )
        tasks = [
            asyncio.create_task(channel.run(engine.handle)),
            asyncio.create_task(dispatcher.run()),
        ]
        await channel.ready.wait()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            await channel.close()  # the sending side's connections, as amparo serve does


async def until(condition: Any, seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the pipeline stalled")
        await asyncio.sleep(0.002)


class Tally:
    """Messages the stand-in delivered to ``chats``, counted as they go (O(1) per check)."""

    def __init__(self, api: TelegramStandIn, chats: set[int]) -> None:
        self.chats, self.count = chats, 0
        api.listeners.append(self.see)

    def see(self, call: Call) -> None:
        if call.method == "sendMessage" and call.params.get("chat_id") in self.chats:
            self.count += 1


async def throughput(api: TelegramStandIn, n: int) -> tuple[float, float]:
    """Updates per second, and the process's CPU milliseconds per update (all threads, the
    stand-in's included): steadier than the rate on a shared machine."""
    tally = Tally(api, {chat(i) for i in range(n)})
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        api.send_text(chat(i), "/checkin")
    await until(lambda: tally.count >= n, 600)
    api.listeners.remove(tally.see)
    return n / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / n


async def echo_throughput(n: int) -> tuple[float, float]:
    api = TelegramStandIn()
    await api.start()

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None and update.message is not None
        await context.bot.send_message(update.effective_chat.id, update.message.text or ".")

    app = (
        Application.builder()
        .token(api.token)
        .base_url(api.base_url)
        .base_file_url(api.base_file_url)
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))
    try:
        async with app:
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling(timeout=25)
            await until(lambda: any(c.method == "getUpdates" for c in api.calls), 30)
            rate = await throughput(api, n)
            await app.updater.stop()
            await app.stop()
    finally:
        await api.stop()
    return rate


async def panics(api: TelegramStandIn, receiver: Receiver, first: int, k: int) -> list[float]:
    latencies = []
    for i in range(first, first + k):
        seen = len(receiver.arrivals)
        pushed = time.perf_counter()
        api.send_text(chat(i), "/panic")
        await until(lambda seen=seen: len(receiver.arrivals) > seen, 60)
        latencies.append((receiver.arrivals[seen] - pushed) * 1000)
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


async def broadcast(sessions: Sessions, vault: Vault, to: list[uuid.UUID], n: int) -> None:
    message = Outbound("Network news: the weekly call moves to Thursday.")
    for start in range(0, n, 1000):
        items = [
            Item(
                "telegram",
                int(Priority.P3),
                f"bench-broadcast:{j}",
                message=message,
                address_id=to[j % len(to)],
            )
            for j in range(start, min(n, start + 1000))
        ]
        async with transaction(sessions) as s:
            await enqueue_many(s, vault, items, now=utcnow())


async def main(args: argparse.Namespace) -> dict[str, object]:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("amparo").setLevel(logging.CRITICAL)  # stalls show as timeouts
    note("echo bot")
    echo_rate, echo_cpu = await echo_throughput(args.updates)
    receiver = Receiver()
    await receiver.start()
    api = TelegramStandIn()
    await api.start()
    total = args.updates + 2 * args.panics
    with tempfile.TemporaryDirectory() as tmp:
        db = create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        async with db.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = sessionmaker(db)
        vault = Vault(Keyring.generate())
        addresses = await seed(sessions, vault, total, f"http://127.0.0.1:{receiver.port}/desk")
        note("amparo: throughput")
        async with amparo(api, sessions, vault, args.rate_throughput):
            rate, cpu = await throughput(api, args.updates)
        note(f"amparo: {rate:.1f} updates/s")
        async with amparo(api, sessions, vault, args.rate_broadcast):
            note("amparo: panics, unloaded")
            quiet = await panics(api, receiver, args.updates, args.panics)
            note("amparo: panics during the broadcast")
            await broadcast(sessions, vault, addresses[: args.updates], args.broadcast)
            note("broadcast queued")
            news, started = Tally(api, {chat(i) for i in range(args.updates)}), time.perf_counter()
            await until(lambda: news.count > 30, 60)  # draining
            loaded = await panics(api, receiver, args.updates + args.panics, args.panics)
            drained = news.count
            drain_rate = drained / (time.perf_counter() - started)
            note("leaving amparo")
        await db.dispose()
    note("done; stopping the stand-in and the receiver")
    # asyncio.wait, not wait_for: wait_for waits for a cancelled stop to end, and a stop that
    # ignored its cancellation once held the figures back for over 15 minutes.
    closing = [asyncio.ensure_future(c) for c in (api.stop(), receiver.runner.cleanup())]
    await asyncio.wait(closing, timeout=10)
    return {
        "benchmark": "telegram_pipeline",
        "backend": "sqlite",
        "updates": args.updates,
        "updates_per_s": round(rate, 1),
        "echo_updates_per_s": round(echo_rate, 1),
        "ratio_vs_echo": round(rate / echo_rate, 3),
        "cpu_ms_per_update": round(cpu, 2),
        "echo_cpu_ms_per_update": round(echo_cpu, 2),
        "panics": args.panics,
        "panic_to_desk_p50_ms": pct(quiet, 0.5),
        "panic_to_desk_p99_ms": pct(quiet, 0.99),
        "panic_to_desk_p50_during_broadcast_ms": pct(loaded, 0.5),
        "panic_to_desk_p99_during_broadcast_ms": pct(loaded, 0.99),
        "broadcast_queued": args.broadcast,
        "broadcast_sent_during_panics": drained,
        "broadcast_rate_per_s": round(drain_rate, 1),
        "rate_throughput": args.rate_throughput,
        "rate_broadcast": args.rate_broadcast,
    }


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=2000, help="defenders sending /checkin")
    parser.add_argument("--panics", type=int, default=50, help="panics per latency run")
    parser.add_argument("--broadcast", type=int, default=10_000, help="messages queued at P3")
    parser.add_argument("--rate-throughput", type=float, default=1000.0, help="messages/s")
    parser.add_argument("--rate-broadcast", type=float, default=30.0, help="messages/s")
    return parser.parse_args()


if __name__ == "__main__":
    # Not asyncio.run: a straggler that ignores cancellation at exit (seen now and then after
    # the run) must not hold back the figures; the process ends right after printing them.
    loop = asyncio.new_event_loop()
    print(json.dumps(loop.run_until_complete(main(parse()))), flush=True)
    os._exit(0)  # nothing left to wait for: a straggler would only hold the process open
