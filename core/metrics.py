"""Prometheus metrics of this process, in the text exposition format, written by hand.

Counters and histograms live in memory (the worker and the server each export their own);
gauges that describe the shared database (outbox depth, sweep lag, oldest P0) are read from it
at scrape time, so any process reports the truth about the queue.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import OutboxMessage, OutboxState
from core.sweep import lag

LATENESS_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out += [f"{name}_sum {self.total}", f"{name}_count {running}"]
        return out


lateness = Histogram(LATENESS_BUCKETS)  # seconds between a step's due time and its commit
deliveries: dict[tuple[str, str], int] = defaultdict(int)  # (channel, outcome) -> count
sweeps = {"runs": 0, "failures": 0}


def delivered(channel: str, outcome: str) -> None:
    deliveries[(channel, outcome)] += 1


async def oldest_pending_p0(session: AsyncSession, now: datetime) -> float:
    """Age in seconds of the oldest P0 message not yet delivered (0 when there is none)."""
    stmt = select(func.min(OutboxMessage.created_at)).where(
        OutboxMessage.state.in_((OutboxState.pending, OutboxState.sending)),
        OutboxMessage.priority == 0,
    )
    oldest = (await session.execute(stmt)).scalar_one_or_none()
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())


async def render(session: AsyncSession, now: datetime, sweep_lag: float) -> str:
    depth = await session.execute(
        select(OutboxMessage.priority, OutboxMessage.state, func.count())
        .where(
            OutboxMessage.state.in_((OutboxState.pending, OutboxState.sending, OutboxState.dead))
        )
        .group_by(OutboxMessage.priority, OutboxMessage.state)
    )
    lines = [
        "# HELP amparo_outbox_depth Outbound messages not delivered, by priority and state.",
        "# TYPE amparo_outbox_depth gauge",
    ]
    lines += [f'amparo_outbox_depth{{priority="P{p}",state="{s}"}} {n}' for p, s, n in depth]
    lines += [
        "# HELP amparo_outbox_oldest_p0_seconds Age of the oldest undelivered P0 message.",
        "# TYPE amparo_outbox_oldest_p0_seconds gauge",
        f"amparo_outbox_oldest_p0_seconds {await oldest_pending_p0(session, now)}",
        "# HELP amparo_sweep_lag_seconds How late the oldest due timer or alert step is.",
        "# TYPE amparo_sweep_lag_seconds gauge",
        f"amparo_sweep_lag_seconds {sweep_lag}",
        "# HELP amparo_step_lateness_seconds Due time to commit, per step taken here.",
        "# TYPE amparo_step_lateness_seconds histogram",
        *lateness.lines("amparo_step_lateness_seconds"),
        "# HELP amparo_deliveries_total Delivery attempts by channel and outcome.",
        "# TYPE amparo_deliveries_total counter",
        *(
            f'amparo_deliveries_total{{channel="{c}",outcome="{o}"}} {n}'
            for (c, o), n in sorted(deliveries.items())
        ),
        "# HELP amparo_sweeps_total Sweeps run here, and those that failed.",
        "# TYPE amparo_sweeps_total counter",
        f'amparo_sweeps_total{{result="ok"}} {sweeps["runs"] - sweeps["failures"]}',
        f'amparo_sweeps_total{{result="failed"}} {sweeps["failures"]}',
    ]
    return "\n".join(lines) + "\n"


LAG_LIMIT_S = 120.0  # beyond this, escalation is failing: /healthz answers 503


async def engine_health(session: AsyncSession, now: datetime) -> dict[str, float | str]:
    """What /healthz adds about escalation, read from the shared database."""
    sweep_lag = await lag(session, now)
    oldest = await oldest_pending_p0(session, now)
    late = sweep_lag > LAG_LIMIT_S or oldest > LAG_LIMIT_S
    return {
        "escalation": "late" if late else "ok",
        "sweep_lag_s": round(sweep_lag, 3),
        "oldest_pending_p0_s": round(oldest, 3),
    }
