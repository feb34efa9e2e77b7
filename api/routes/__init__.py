"""The desk API under /api/v1: one router per resource."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from api.errors import install_handlers
from api.hardening import Hardening
from api.routes import (
    alerts,
    audit,
    auth,
    defenders,
    desk_group,
    external,
    invites,
    keys,
    policies,
    reports,
    responders,
    tokens,
    webhooks,
)

api_router = APIRouter(prefix="/api/v1")
for module in (
    auth,
    external,
    alerts,
    defenders,
    invites,
    reports,
    policies,
    responders,
    desk_group,
    keys,
    tokens,
    webhooks,
    audit,
):
    api_router.include_router(module.router)


def install(app: FastAPI) -> None:
    """Routes, translated error answers, security headers and the request-size cap."""
    app.include_router(api_router)
    install_handlers(app)
    app.add_middleware(Hardening)
