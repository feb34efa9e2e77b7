"""External desks act on an alert by the dedup_key their webhook events carry.

A dedup_key names one alert, and one stretch of it: the defender's next alert of the same kind
has its own, and a reopened alert gets a new one (``<key>.<n>``) that its next events carry.
A request naming an earlier alert's key, or the key an alert had before it was reopened (a
late retry), answers 409 and changes nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from api import errors
from api.alert_schemas import AlertOut, ResolveIn
from api.deps import AlertsWrite, NowDep, SessionDep, VaultDep
from api.errors import ApiError
from api.routes.alerts import acknowledge_alert, resolve_alert
from core import desk_alerts
from core.auth import Principal
from core.models import Alert

router = APIRouter(prefix="/alerts/by-dedup", tags=["external desk"])

DedupKey = Annotated[str, Field(min_length=1, max_length=80)]


async def _by_dedup(session: AsyncSession, principal: Principal, dedup_key: str) -> Alert:
    try:
        alert = await desk_alerts.open_by_dedup(session, principal.org_id, dedup_key)
    except desk_alerts.DeskConflict:  # the key it had before it was reopened: a late retry
        raise ApiError(409, errors.CONFLICT) from None
    if alert is None:
        raise ApiError(404, errors.NOT_FOUND)
    return alert


@router.post("/{dedup_key}/acknowledge", responses={404: {}, 409: {}})
async def acknowledge_by_dedup(
    dedup_key: DedupKey, principal: AlertsWrite, session: SessionDep, vault: VaultDep, now: NowDep
) -> AlertOut:
    """External desks: acknowledge the alert known by its webhook dedup_key. Use the key of
    the latest event about the alert: a reopened alert has a new one, and the key it had
    before answers 409 (a late retry must not act on the reopened alert)."""
    alert = await _by_dedup(session, principal, dedup_key)
    return await acknowledge_alert(session, vault, principal, alert, now)


@router.post("/{dedup_key}/resolve", responses={404: {}, 409: {}})
async def resolve_by_dedup(
    dedup_key: DedupKey,
    body: ResolveIn,
    principal: AlertsWrite,
    session: SessionDep,
    vault: VaultDep,
    now: NowDep,
) -> AlertOut:
    """External desks: resolve the alert known by its webhook dedup_key, with an outcome.
    Use the key of the latest event about the alert: a reopened alert has a new one, and the
    key it had before answers 409 and closes nothing (a late retry of an earlier resolve)."""
    alert = await _by_dedup(session, principal, dedup_key)
    return await resolve_alert(session, vault, principal, alert, body.outcome, now)
