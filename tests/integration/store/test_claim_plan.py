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
    "first": 4,
    "window": 4,
    "type": "image",
    "owner": None,
    # claim_one's
    "event": "{}",
    "note_kind": None,
    "note": None,
    "channel": "c",
    "prefix": "n;e:",
}
#: Queries that walk the queue in claim order (priority, fair_tag, rank_at, id).
IN_CLAIM_ORDER = (
    "claim",
    "claim_window",
    "fair_head",
    "next_priority",
    "queue_position",
    "queue_position_capped",
    "queue_queued",
    # by job type: comfy jobs walk jobs_claim, a handler type its range of jobs_claim_type
    "claim_window_comfy",
    "claim_window_type",
    "next_priority_type",
)


@pytest.mark.parametrize("name", [*IN_CLAIM_ORDER, "claim_comfy", "claim_type"])
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


#: PostgreSQL's one-statement claims (claim_one) and their candidates walk it too.
PG_IN_CLAIM_ORDER = (*IN_CLAIM_ORDER, "claim_next", "claim_next_comfy", "claim_next_type")


@pytest.mark.postgres
@pytest.mark.parametrize(
    "name", [*PG_IN_CLAIM_ORDER, "claim_one", "claim_one_comfy", "claim_one_type"]
)
async def test_postgres_walks_the_claim_index(pg_schema: str, name: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn()) as conn:
        await migrate_postgres(conn, pg_schema)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}"')
        # an empty table has no statistics: make the planner show the index path it has
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        sql = queries("postgresql")[name] if name in PG_IN_CLAIM_ORDER else claim_one(name)
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {sql}", PARAMS).fetchall())
    assert "jobs_claim" in plan, plan
    # no sort of the jobs: the one sort a claim_one has orders its own two events
    sort_keys = [line for line in plan.splitlines() if "Sort Key:" in line]
    assert plan.count("Sort  (") == len(sort_keys), plan
    assert all('"*VALUES*"' in line for line in sort_keys), plan


def claim_one(name: str) -> str:
    """The claim_one statement the PostgreSQL store runs for `name` (claim_one_<candidate>)."""
    from comfyrun.store.pgstatements import Q

    return Q[name].decode()


def test_sqlite_counts_read_the_kept_counts_not_the_jobs(tmp_path: Path) -> None:
    """Every count (the queue size of every ComfyUI /ws status message, /metrics, /stats, a
    key's) reads job_counts, a few rows kept by triggers, never the jobs or their indexes."""
    with closing(sqlite3.connect(tmp_path / "plan.db", isolation_level=None)) as conn:
        migrate_sqlite(conn)
        for name in (
            "counts",
            "counts_unfinished",
            "counts_of_owner",
            "counts_unfinished_of_owner",
        ):
            sql = queries("sqlite")[name]
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", {"owner": "k"})]
            assert any("job_counts" in step for step in plan), (name, plan)
            assert not any(" jobs " in f"{step} " for step in plan), (name, plan)


async def test_sqlite_queue_position_costs_what_it_counts(tmp_path: Path) -> None:
    """A job's position costs the jobs ahead of it, up to the cap: one at the front of a deep
    queue is not compared with the queue behind it, and one far back costs less than counting
    to the cap (counted in SQLite's virtual-machine steps, not time)."""
    from tests.support.store import new_job

    from comfyrun.core.batch import NewBatch
    from comfyrun.store.sqlite import SQLiteStore

    path = tmp_path / "q.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        await store.create_batch(
            NewBatch(workflow="w", version="1"), [new_job() for _ in range(3000)], now=10.0
        )
        await store.enqueue(new_job(priority=1), now=20.0)  # ahead of all of them
    finally:
        await store.close()
    sql = queries("sqlite")
    with closing(sqlite3.connect(path)) as conn:
        order = conn.execute(
            "SELECT priority, fair_tag, rank_at, id FROM jobs WHERE status = 'queued'"
            " ORDER BY priority DESC, fair_tag, rank_at, id"
        ).fetchall()
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn.set_progress_handler(step, 10)

        def position(name: str, at: int, limit: int) -> tuple[int, int]:
            nonlocal steps
            priority, fair_tag, rank_at, job_id = order[at]
            params = {"now": 30.0, "priority": priority, "fair_tag": fair_tag}
            params |= {"rank_at": rank_at, "id": job_id, "limit": limit, "first": 64}
            steps = 0
            ahead = conn.execute(sql[name], params).fetchone()[0]
            return min(ahead, limit), steps

        front, front_steps = position("queue_position", 1, 1000)
        tail, tail_steps = position("queue_position", 3000, 1000)
        capped, capped_steps = position("queue_position_capped", 3000, 1000)
        exact, exact_steps = position("queue_position_capped", 3000, 5000)
        middle, _ = position("queue_position_capped", 700, 1000)
        near_back, near_back_steps = position("queue_position_capped", 2980, 5000)
        # the back of the queue with jobs waiting for their retry: fewer than `first`, then more

        def waiting(n: int) -> None:
            """The first `n` jobs stored wait for a retry: out of the runnable order."""
            conn.execute(
                "UPDATE jobs SET next_run_at = 99.0"
                " WHERE rowid IN (SELECT rowid FROM jobs LIMIT ?)",
                (n,),
            )
            later = {r[0] for r in conn.execute("SELECT id FROM jobs WHERE next_run_at = 99.0")}
            order[:] = [o for o in order if o[3] not in later]

        waiting(10)
        few_waiting, few_steps = position("queue_position_capped", 2990, 5000)
        waiting(100)
        many_waiting, many_steps = position("queue_position_capped", 2900, 5000)
    assert (front, tail, capped, middle) == (1, 1000, 1000, 700)
    assert (exact, near_back, few_waiting, many_waiting) == (3000, 2980, 2990, 2900)
    assert front_steps * 50 < tail_steps  # ~1 job counted against 1000
    # at the back: the kept counts less the few waiting and behind, not a walk of the queue
    assert capped_steps * 20 < tail_steps and exact_steps * 20 < tail_steps
    assert near_back_steps * 5 < tail_steps and few_steps * 20 < tail_steps
    assert many_steps > tail_steps  # 100 waiting: the runnable ones are walked (and counted)
