"""Flows are found, not registered: adding a flow is adding one module to ``flows/``.

A flow module defines ``NAME``, ``STATES`` (state name → async function taking a ``Context``
and returning the next state: ``"state"``, ``"flow:state"`` or ``END``), and optionally
``TRIGGERS`` (a folded command or a choice key → the state it starts in), ``PIN_STATES``
(states that wait for a PIN, checked before the transaction), ``TTL`` (how long an
unanswered question waits; None: forever) and ``on_cancel`` (what "cancel" means there).
"""

from __future__ import annotations

import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib import import_module
from pathlib import Path

from flows.context import Context

State = Callable[[Context], Awaitable[str]]
DEFAULT_TTL = timedelta(minutes=30)


@dataclass(frozen=True)
class Flow:
    name: str
    states: dict[str, State]
    triggers: dict[str, str]
    pin_states: frozenset[str]
    ttl: timedelta | None
    on_cancel: State | None


@cache
def all_flows() -> dict[str, Flow]:
    found: dict[str, Flow] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = import_module(f"flows.{info.name}")
        if not hasattr(module, "STATES"):
            continue
        found[module.NAME] = Flow(
            name=module.NAME,
            states=dict(module.STATES),
            triggers=dict(getattr(module, "TRIGGERS", {})),
            pin_states=frozenset(getattr(module, "PIN_STATES", ())),
            ttl=getattr(module, "TTL", DEFAULT_TTL),
            on_cancel=getattr(module, "on_cancel", None),
        )
    return found


def get(name: str) -> Flow | None:
    return all_flows().get(name)


@cache
def triggers() -> dict[str, tuple[str, str]]:
    """Every trigger: folded command or choice key → (flow, state)."""
    return {
        key: (f.name, state) for f in all_flows().values() for key, state in f.triggers.items()
    }


def is_pin_state(flow: str, state: str) -> bool:
    found = get(flow)
    return found is not None and state in found.pin_states


def resolve(current_flow: str, target: str) -> tuple[str, str]:
    """``"state"`` (same flow) or ``"flow:state"`` → (flow, state)."""
    if ":" in target:
        flow, state = target.split(":", 1)
        return flow, state
    return current_flow, target


def valid(flow: str, state: str) -> bool:
    found = get(flow)
    return found is not None and state in found.states
