"""A count of changes to each organisation's alert queue, kept by the database itself (SQLite).

The desk's queue is read far more often than it changes: every responder's screen and every
integration pages it, over and over, and most of those pages are the same bytes as the last
time. The API keeps the pages it wrote (api.queue_route), each with this count as it stood
before its query ran, and serves one again only while the count is unchanged.

The count is bumped by triggers, in the same transaction as the change, for every write
that can change what a page shows or which alerts it holds: any insert or delete of an alert,
an update of any column the queue shows or filters or orders by, a defender's handle changed,
a defender deleted. Triggers see every writer (every process, a migration, a hand-typed
statement), so no code path can forget them. A page read before a change committed carries
the count from before it, so it is never served after the change (tests/api/test_queue_cache).

SQLite only: its writers take turns anyway, and one row per organisation costs them a few
microseconds. On PostgreSQL that row would make concurrent writers wait for each other, so
its pages are not kept (``current`` answers None). A database whose triggers are missing (a
table rebuilt by a migration, say) also answers None: no page is kept rather than a stale one.
"""

from __future__ import annotations

import uuid
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import DDL, MetaData, event
from sqlalchemy.engine import Engine

from core import sqlite

# What a queue page shows, filters by and orders by (core.desk_alerts.QUEUE_COLUMNS and
# _queue_query); tests/api/test_queue_cache.py checks the two agree.
ALERT_COLUMNS = (
    "id",
    "org_id",
    "defender_id",
    "kind",
    "priority",
    "state",
    "dedup_key",
    "do_not_contact",
    "step",
    "triggered_at",
    "acknowledged_at",
    "acknowledged_by",
    "assigned_to",
    "resolved_at",
    "outcome",
)
DEFENDER_COLUMNS = ("id", "org_id", "handle")


def _bump(org: str, unless: str = "") -> str:
    """Count one more change of ``org``'s queue (not when ``org`` is the same as ``unless``)."""
    where = f" WHERE {org} IS NOT {unless}" if unless else " WHERE true"
    return (
        f"INSERT INTO queue_versions (org_id, version) SELECT {org}, 1{where} "
        "ON CONFLICT (org_id) DO UPDATE SET version = version + 1;"
    )


TRIGGERS = {
    "queue_alert_insert": f"AFTER INSERT ON alerts BEGIN {_bump('NEW.org_id')} END",
    "queue_alert_update": (
        f"AFTER UPDATE OF {', '.join(ALERT_COLUMNS)} ON alerts "
        f"BEGIN {_bump('NEW.org_id')} {_bump('OLD.org_id', 'NEW.org_id')} END"
    ),
    "queue_alert_delete": f"AFTER DELETE ON alerts BEGIN {_bump('OLD.org_id')} END",
    "queue_defender_update": (
        f"AFTER UPDATE OF {', '.join(DEFENDER_COLUMNS)} ON defenders "
        f"BEGIN {_bump('NEW.org_id')} {_bump('OLD.org_id', 'NEW.org_id')} END"
    ),
    "queue_defender_delete": f"AFTER DELETE ON defenders BEGIN {_bump('OLD.org_id')} END",
}


def create_statements() -> list[str]:
    return [f"CREATE TRIGGER IF NOT EXISTS {name} {body}" for name, body in TRIGGERS.items()]


def drop_statements() -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS]


def install(metadata: MetaData) -> None:
    """Create the triggers once ``metadata``'s tables are (``create_all``) on SQLite, as
    migration 0013 does."""
    for when, statements in (
        ("after_create", create_statements()),
        ("before_drop", drop_statements()),
    ):
        for statement in statements:
            ddl = DDL(statement)  # type: ignore[no-untyped-call]
            event.listen(metadata, when, ddl.execute_if(dialect="sqlite"))


# Whether each engine's database holds every trigger, asked again whenever its schema changes.
_checked: WeakKeyDictionary[Engine, tuple[int, bool]] = WeakKeyDictionary()
_COUNT = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({})"
_READ = "SELECT version FROM queue_versions WHERE org_id = ?"


def current(engine: Engine, org_id: uuid.UUID) -> int | None:
    """The organisation's count, as committed now, on the engine's SQLite file; None where
    pages are not to be kept (PostgreSQL, an in-memory database, triggers missing)."""
    conn = sqlite.reader(engine)
    if conn is None:
        return None
    schema: Any = conn.execute("PRAGMA schema_version").fetchone()
    known = _checked.get(engine)
    if known is None or known[0] != schema[0]:  # first use, or a migration ran meanwhile
        names = ", ".join(f"'{name}'" for name in TRIGGERS)
        found: Any = conn.execute(_COUNT.format(names)).fetchone()
        known = _checked[engine] = (schema[0], found[0] == len(TRIGGERS))
    if not known[1]:
        return None
    row = conn.execute(_READ, (org_id.hex,)).fetchone()
    return 0 if row is None else int(row[0])
