"""Running one state function for the router (``flows.router``), and a report set aside
while the defender checks in: kept in the check-in's data (``RESUME``) and taken up again once
the check-in is done (``aside``, ``resume``, ``keep_for``, ``lapsed``).
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from flows import help, registry, report
from flows.context import END, Context, Retry
from flows.store import IDLE


async def run(
    ctx: Context, flow: str, state: str, *, handler: registry.State | None = None
) -> tuple[str, str]:
    """Run one state function; bad input (``Retry``) restores the data and asks again."""
    spec = registry.get(flow)
    function = handler or (spec.states[state] if spec is not None else None)
    if function is None:  # a stored state that no longer exists (an old release)
        ctx.data = {}
        help.menu(ctx)
        return IDLE, IDLE
    snapshot, said = copy.deepcopy(ctx.data), len(ctx.replies)
    try:
        target = await function(ctx)
    except Retry as retry:
        ctx.data = snapshot
        del ctx.replies[said:]
        ctx.say(retry.message)
        ctx.ask_again()
        return flow, state
    if target == END:
        if RESUME in ctx.data:
            return resume(ctx)
        ctx.data = {"_ask": ctx.data["_ask"]} if ctx.asked and "_ask" in ctx.data else {}
        return IDLE, IDLE
    return registry.resolve(flow, target)


RESUME = "_resume"  # a report set aside while the defender checks in (``aside``)


def aside(flow: str, state: str, data: dict[str, Any]) -> dict[str, Any]:
    """The data to start a check-in with from ``flow``: a report being written is set aside
    in it (its sealed parts live in the conversation until it is filed) and taken up again
    once the check-in is done (``resume``), also when "I'm safe" comes again during that
    check-in; any other conversation just ends."""
    if RESUME in data:
        return {RESUME: data[RESUME]}
    if flow != report.NAME:
        return {}
    return {RESUME: {"flow": flow, "state": state, "data": data}}


def resume(ctx: Context, *, ask: bool = True) -> tuple[str, str]:
    """Back to the report set aside: its last question asked again (unless ``ask`` is False:
    the message that came is then handled there, and asks what follows)."""
    kept = ctx.data[RESUME]
    ctx.data = kept["data"]
    if ask:
        ctx.ask_again()
    return kept["flow"], kept["state"]


def keep_for(flow: str, data: dict[str, Any]) -> timedelta | None:
    """How long an unanswered conversation is kept: its flow's TTL; with a report set aside,
    the report's. The check-in's own question still closes after the check-in's TTL
    (``lapsed``), and the report is then taken up again, not dropped with it."""
    spec = registry.get(data[RESUME]["flow"] if RESUME in data else flow)
    return spec.ttl if spec is not None else None


def lapsed(ctx: Context, flow: str) -> bool:
    """A report was set aside for a check-in whose question then went unanswered for its
    TTL: what expiry is for any other conversation (``store.load``), counted the same way."""
    spec = registry.get(flow)
    return (
        RESUME in ctx.data
        and spec is not None
        and spec.ttl is not None
        and ctx.since is not None
        and ctx.since + spec.ttl <= ctx.now
    )
