"""The claim and the queries that walk claim order read the `jobs_claim` index in its order:
no sort of the queued jobs (EXPLAIN), on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from tests.support.store import drop_schema, new_schema_name, pg_dsn, require_pg

from comfyrun.store.migrate import migrate_postgres, migrate_sqlite
from comfyrun.store.queries import queries

PARAMS = {
    "worker_id": "w",
    "lease_expires_at": 2.0,
    "now": 1.0,
    "priority": 0,
    "fair_tag": 0.0,
    "rank_at": 1.0,
    "id": "x",
    "limit": 10,
    "window": 4,
    "type": "image",
}
#: Queries that walk the queue in claim order (priority, fair_tag, rank_at, id).
IN_CLAIM_ORDER = (
    "claim",
    "claim_window",
    "fair_head",
    "next_priority",
    "queue_position",
    # by job type: comfy jobs walk jobs_claim, a handler type its range of jobs_claim_type
    "claim_window_comfy",
    "claim_window_type",
    "next_priority_type",
)


@pytest.mark.parametrize("name", IN_CLAIM_ORDER)
def test_sqlite_walks_the_claim_index(tmp_path: Path, name: str) -> None:
    with closing(sqlite3.connect(tmp_path / "plan.db", isolation_level=None)) as conn:
        migrate_sqlite(conn)
        plan = [
            row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {queries('sqlite')[name]}", PARAMS)
        ]
    assert any("jobs_claim" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


@pytest.fixture
def pg_schema() -> Iterator[str]:
    require_pg()
    schema = new_schema_name()
    yield schema
    drop_schema(schema)


@pytest.mark.postgres
@pytest.mark.parametrize("name", IN_CLAIM_ORDER)
async def test_postgres_walks_the_claim_index(pg_schema: str, name: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn()) as conn:
        await migrate_postgres(conn, pg_schema)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}"')
        # an empty table has no statistics: make the planner show the index path it has
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        sql = queries("postgresql")[name]
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {sql}", PARAMS).fetchall())
    assert "jobs_claim" in plan, plan
    assert "Sort" not in plan, plan


def test_sqlite_counts_the_unfinished_without_the_history(tmp_path: Path) -> None:
    """The queue size (every ComfyUI /ws status message) reads only the unfinished jobs'
    part of an index, not every job ever kept."""
    with closing(sqlite3.connect(tmp_path / "plan.db", isolation_level=None)) as conn:
        migrate_sqlite(conn)
        sql = queries("sqlite")["counts_unfinished"]
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
    # a SEARCH on the status (a range of the index), never a SCAN of the whole table/index
    assert any(step.startswith("SEARCH jobs") and "(status=?)" in step for step in plan), plan
    assert not any(step.startswith("SCAN jobs") for step in plan), plan
