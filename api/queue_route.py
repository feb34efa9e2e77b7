"""The alert queue's short way through FastAPI, for its most common request.

A desk's screens and integrations page the queue all day with an API token, and for that
request FastAPI's own work (solving the route's five dependencies, validating each query
parameter through pydantic, an exit stack for the session) cost more than the query and the
JSON together (bench/api.py). ``QueueRoute`` answers the plain case itself: a live token
already in this process's cache (core.api_tokens.TokenCache) holding ``alerts:read``, and a query
string of known names, each given once, in their canonical form. Anything else (a cookie, a
token to look up, a missing scope, a value to refuse or to coerce) takes the route as
declared, so errors, 422 bodies and the documented schema come from one place. Both ways run
the same statement (core.desk_alerts.list_alerts) and write the same bytes
(api.alert_schemas.queue_page_json): tests/api/test_queue_route.py compares them.

On SQLite the short way also keeps the pages it wrote (``Pages``), each with the count of
its organisation's queue changes as it stood before the page's query ran
(core.queue_versions, kept by triggers in every writer's transaction). A page is served again
only while that count is unchanged, so never after a change it does not show has committed
(tests/api/test_queue_cache.py).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.alert_schemas import queue_page_json
from api.deps import bearer, get_now, token_cache
from core import desk_alerts, queue_versions
from core.auth import Principal, digest
from core.desk_alerts import Cursor
from core.models import AlertKind, AlertState

SCOPE = "alerts:read"
_STATES = {s.value: s for s in AlertState}
_KINDS = {k.value: k for k in AlertKind}
_PRIORITIES = {str(p): p for p in range(4)}
_LIMITS = {str(n): n for n in range(1, 201)}  # as Query(ge=1, le=200) would take them
_MAX_CURSOR = 200

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
PageKey = tuple[uuid.UUID, bytes]  # the organisation, the query string


class Pages:
    """The queue pages this process wrote lately, each with its organisation's count of queue
    changes from before its query: at most ``max_entries`` (about 20 KB each), the least
    recently served dropped first."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[PageKey, tuple[int, bytes]] = OrderedDict()

    def get(self, key: PageKey, version: int) -> bytes | None:
        found = self._entries.get(key)
        if found is None or found[0] != version:
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: PageKey, version: int, body: bytes) -> None:
        self._entries[key] = (version, body)
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def pages(request: Request) -> Pages:
    """This app's kept pages (one per app: tests run several apps at once)."""
    kept: Pages | None = getattr(request.app.state, "queue_pages", None)
    if kept is None:
        kept = request.app.state.queue_pages = Pages()
    return kept


def filters(query: bytes) -> dict[str, Any] | None:
    """The listing's arguments from a canonical query string, or None for any other."""
    found: dict[str, Any] = {}
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    for name, value in pairs:
        if name in found:
            return None
        if name == "state" and value in _STATES:
            found[name] = _STATES[value]
        elif name == "kind" and value in _KINDS:
            found[name] = _KINDS[value]
        elif name == "priority" and value in _PRIORITIES:
            found[name] = _PRIORITIES[value]
        elif name == "limit" and value in _LIMITS:
            found[name] = _LIMITS[value]
        elif name == "cursor" and len(value) <= _MAX_CURSOR:
            try:
                found["after"] = Cursor.decode(value)
            except ValueError:
                return None
            found[name] = None  # seen once
        else:
            return None
    found.pop("cursor", None)
    return found


async def _now(request: Request) -> datetime:
    """The clock of the route's own ``get_now`` dependency, overrides included (tests)."""
    clock = request.app.dependency_overrides.get(get_now, get_now)
    now = clock()
    return await now if isinstance(now, Coroutine) else now  # type: ignore[no-any-return]


async def short_way(request: Request) -> Response | None:
    """The page for a cached token's plain request; None when the declared route must answer."""
    token = bearer(request)
    if token is None:
        return None
    principal: Principal | None = token_cache(request).get(digest(token), await _now(request))
    if principal is None or principal.must_change_password or SCOPE not in principal.scopes:
        return None
    query: bytes = request.scope["query_string"]
    args = filters(query)
    if args is None:
        return None
    # Read before the query: a change committing in between makes the page newer than its
    # count says, never older, so it is written again at the next request, not kept stale.
    version = queue_versions.current(request.app.state.engine.sync_engine, principal.org_id)
    key, kept = (principal.org_id, query), pages(request)
    body = None if version is None else kept.get(key, version)
    if body is None:
        async with request.app.state.sessions() as session:
            org_id = principal.org_id
            rows, following = await desk_alerts.list_alerts(session, org_id=org_id, **args)
            if session.in_transaction():  # PostgreSQL: the read's transaction, ended
                await session.rollback()
        body = queue_page_json(rows, None if following is None else following.encode())
        if version is not None:
            kept.put(key, version, body)
    return Response(body, media_type="application/json")


class QueueRoute(APIRoute):
    """An APIRoute trying ``short_way`` before its dependencies are solved."""

    def get_route_handler(self) -> Handler:
        declared: Handler = super().get_route_handler()

        async def handler(request: Request) -> Response:
            page = await short_way(request)
            return page if page is not None else await declared(request)

        return handler
