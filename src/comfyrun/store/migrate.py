"""Schema migrations: numbered SQL files `sql/<dialect>/NNNN_name.sql`, applied in order, each
recorded in a `schema_version` table. `sql/<dialect>/schema.sql` is what they add up to (a test
checks it). The stores call these from `open()`, under a lock so that several processes opening
the same database at once apply each migration exactly once.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
#: Any constant works: it only has to be the same for every comfyrun process.
PG_MIGRATION_LOCK = 0x636F6D66


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """The dialect's migrations, in version order."""
    folder = resources.files("comfyrun.store") / "sql" / dialect
    found = []
    for entry in folder.iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m[1]), m[2], entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return found


def statements(script: str) -> list[str]:
    """Split a SQL script into statements (SQLite runs one per execute)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement: {current.strip()[:80]}")
    return out


SCHEMA_VERSION_SQL = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)


def migrate_sqlite(conn: sqlite3.Connection, found: Sequence[Migration] | None = None) -> list[int]:
    """Apply pending migrations (default: the packaged ones) in one IMMEDIATE transaction;
    returns the versions applied. `conn` must be in autocommit mode (isolation_level=None).
    Blocking: the SQLite store calls it on its own thread."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(SCHEMA_VERSION_SQL)
        done = {row[0] for row in conn.execute("SELECT version FROM schema_version").fetchall()}
        applied = []
        for mig in migrations("sqlite") if found is None else found:
            if mig.version in done:
                continue
            for stmt in statements(mig.sql):
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, time.time()),
            )
            applied.append(mig.version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    _log_applied("sqlite", applied)
    return applied


async def migrate_postgres(conn: psycopg.AsyncConnection[Any], schema: str) -> list[int]:
    """Create `schema` if needed and apply pending migrations there, one transaction each,
    serialised across processes by an advisory lock."""
    from psycopg import sql
    from psycopg.rows import tuple_row

    applied = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK,))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        await conn.execute(SCHEMA_VERSION_SQL)
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute("SELECT version FROM schema_version")
            done = {row[0] for row in await cur.fetchall()}
        for mig in migrations("postgresql"):
            if mig.version in done:
                continue
            await conn.execute(mig.sql.encode())
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
                (mig.version, mig.name, time.time()),
            )
            applied.append(mig.version)
    _log_applied("postgresql", applied)
    return applied


def _log_applied(dialect: str, applied: list[int]) -> None:
    if applied:
        log.info(
            "applied %s migrations %s",
            dialect,
            applied,
            extra={"action": "migrate", "versions": applied},
        )


__all__ = ["Migration", "migrate_postgres", "migrate_sqlite", "migrations", "statements"]
