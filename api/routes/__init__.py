"""The desk API under /api/v1: one router per resource."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from api.errors import install_handlers
from api.hardening import Hardening
from api.routes import (
    alerts,
    audit,
    auth,
    broadcasts,
    defenders,
    desk_group,
    external,
    handoffs,
    invites,
    keys,
    policies,
    reports,
    responders,
    rollcalls,
    tokens,
    webhooks,
)

PREFIX = "/api/v1"
ROUTERS: tuple[APIRouter, ...] = (
    auth.router,
    external.router,
    alerts.router,
    defenders.router,
    handoffs.router,
    invites.router,
    broadcasts.router,
    rollcalls.router,
    reports.router,
    policies.router,
    responders.router,
    desk_group.router,
    keys.router,
    tokens.router,
    webhooks.router,
    audit.router,
)


def install(app: FastAPI) -> None:
    """Routes, translated error answers, security headers and the request-size cap. Each
    router is included in the app itself, not in an /api/v1 router included in turn: FastAPI
    matches a nested router's routes again at every level on every request (bench/api.py)."""
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)
    install_handlers(app)
    app.add_middleware(Hardening)
