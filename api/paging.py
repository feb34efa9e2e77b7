"""Cursor paging for the lists that answer a bare JSON array: broadcasts and roll-calls.

They answered their latest 100 as an array before they could page. The array stays, so that no
client breaks, and the next page's cursor comes in a header: the cursor the other lists give
in ``next_cursor`` (core.desk_alerts.Cursor), passed back the same way, as ``?cursor=``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query, Response

from api.errors import N_, ApiError
from core import broadcasts
from core.desk_alerts import Cursor
from core.models import Broadcast

NEXT_CURSOR = "Amparo-Next-Cursor"
BAD_CURSOR = N_("this page cursor is not valid")
CursorQuery = Annotated[str | None, Query(max_length=200)]
LimitQuery = Annotated[int, Query(ge=1, le=200)]
DEFAULT_LIMIT = broadcasts.PAGE  # what the lists answered before they paged
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            NEXT_CURSOR: {
                "description": "Present when older entries follow: pass it as `cursor` for "
                "the next page.",
                "schema": {"type": "string"},
            }
        }
    },
    422: {},
}


def before(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """Where the page asked for starts; ApiError 422 for a cursor this API did not hand out."""
    if cursor is None:
        return None
    try:
        after = Cursor.decode(cursor)
    except ValueError:
        raise ApiError(422, BAD_CURSOR) from None
    return after.at, after.id


def cut(found: list[Broadcast], limit: int, response: Response) -> list[Broadcast]:
    """The page of ``found`` (read with ``limit + 1``), and the next one's cursor if any."""
    if len(found) <= limit:
        return found
    page = found[:limit]
    response.headers[NEXT_CURSOR] = Cursor(page[-1].created_at, page[-1].id).encode()
    return page
