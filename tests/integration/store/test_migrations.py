"""The numbered migrations produce exactly sql/<dialect>/schema.sql, and apply once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from tests.support.store import drop_schema, new_job, new_schema_name, pg_dsn, require_pg

from comfyrun.store.factory import open_store
from comfyrun.store.migrate import (
    Migration,
    migrate_postgres,
    migrate_sqlite,
    migrations,
    statements,
)
from comfyrun.store.queries import sql_text


def sqlite_schema(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' AND name != 'schema_version' ORDER BY name"
        ).fetchall()
    return [(t, n, " ".join((s or "").split())) for t, n, s in rows]


async def test_sqlite_migrations_match_schema_sql(tmp_path: Path) -> None:
    migrated = tmp_path / "migrated.db"
    with closing(sqlite3.connect(migrated, isolation_level=None)) as conn:
        assert migrate_sqlite(conn) == [m.version for m in migrations("sqlite")]
        assert migrate_sqlite(conn) == []  # applied once
    declared = tmp_path / "declared.db"
    with sqlite3.connect(declared) as conn:
        for stmt in statements(sql_text("sqlite", "schema.sql")):
            conn.execute(stmt)
    assert sqlite_schema(migrated) == sqlite_schema(declared)
    assert any(name == "jobs_claim" for _, name, _ in sqlite_schema(migrated))


@pytest.fixture
def two_schemas() -> Iterator[tuple[str, str]]:
    require_pg()
    a, b = new_schema_name(), new_schema_name()
    yield a, b
    drop_schema(a)
    drop_schema(b)


def pg_schema(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> dict[str, object]:
    columns = conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default, "
        "ordinal_position FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name != 'schema_version' ORDER BY table_name, ordinal_position",
        (schema,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, replace(indexdef, %s, 'S') FROM pg_indexes WHERE schemaname = %s "
        "AND tablename != 'schema_version' ORDER BY indexname",
        (f"{schema}.", schema),
    ).fetchall()
    return {"columns": columns, "indexes": indexes}


@pytest.mark.postgres
async def test_postgres_migrations_match_schema_sql(two_schemas: tuple[str, str]) -> None:
    migrated, declared = two_schemas
    async with await psycopg.AsyncConnection.connect(pg_dsn()) as conn:
        assert await migrate_postgres(conn, migrated) == [
            m.version for m in migrations("postgresql")
        ]
        assert await migrate_postgres(conn, migrated) == []
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{declared}"')
        conn.execute(f'SET search_path TO "{declared}"')
        conn.execute(sql_text("postgresql", "schema.sql").encode())
        got, want = pg_schema(conn, migrated), pg_schema(conn, declared)
    assert got == want
    assert any(name == "jobs_claim" for name, _ in want["indexes"])  # type: ignore[attr-defined]


@pytest.mark.postgres
async def test_concurrent_opens_apply_migrations_once() -> None:
    require_pg()
    schema = new_schema_name()
    stores = [open_store(f"{pg_dsn()}?schema={schema}") for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        with psycopg.connect(pg_dsn()) as conn:
            rows = conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall()
        assert [r[0] for r in rows] == [m.version for m in migrations("postgresql")]
    finally:
        for s in stores:
            await s.close()
        drop_schema(schema)


async def test_data_survives_reopening(db_url: str) -> None:
    store = open_store(db_url)
    await store.open()
    job, _ = await store.enqueue(new_job(idempotency_key="k", request_hash="h"))
    await store.close()
    again = open_store(db_url)
    await again.open()
    try:
        assert await again.get(job.id) == job
        same, created = await again.enqueue(new_job(idempotency_key="k", request_hash="h"))
        assert not created and same.id == job.id
    finally:
        await again.close()


async def test_sqlite_upgrade_applies_only_newer_migrations(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    first = migrations("sqlite")[0]
    later = Migration(
        2, "later", "CREATE TABLE later (x INTEGER);\nCREATE INDEX later_x ON later (x);"
    )
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        assert migrate_sqlite(conn, [first]) == [1]
        assert migrate_sqlite(conn, [first, later]) == [2]
        assert migrate_sqlite(conn, [first, later]) == []
    names = {name for _, name, _ in sqlite_schema(path)}
    assert {"jobs", "later", "later_x"} <= names
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version, name FROM schema_version ORDER BY version")
        assert rows.fetchall() == [(1, "initial"), (2, "later")]


async def test_a_failed_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    broken = Migration(2, "broken", "CREATE TABLE half (x INTEGER);\nNOT SQL;")
    with (
        closing(sqlite3.connect(path, isolation_level=None)) as conn,
        pytest.raises(sqlite3.OperationalError),
    ):
        migrate_sqlite(conn, [migrations("sqlite")[0], broken])
    assert sqlite_schema(path) == []


async def test_jobs_queued_before_rank_at_keep_their_submission_order(tmp_path: Path) -> None:
    path = tmp_path / "upgrade.db"
    every = migrations("sqlite")
    before = [m for m in every if m.version < 9]
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate_sqlite(conn, before)
        for job_id, created in (("old", 100.0), ("older", 50.0)):
            conn.execute(
                "INSERT INTO jobs (id, status, workflow, created_at, next_run_at) "
                "VALUES (?, 'queued', '{}', ?, ?)",
                (job_id, created, created),
            )
        assert migrate_sqlite(conn, every) == [m.version for m in every if m.version >= 9]
        ranks = dict(conn.execute("SELECT id, rank_at FROM jobs").fetchall())
    assert ranks == {"old": 100.0, "older": 50.0}
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        first = await store.claim("w", 30, now=200.0)
        assert first is not None and first.id == "older"
    finally:
        await store.close()


async def test_jobs_stored_before_job_counts_are_counted_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """0012 fills job_counts from the jobs already stored (per owner and status); the store
    then counts them, and its triggers go on from there."""
    from comfyrun.core.job import JobStatus

    path = tmp_path / "upgrade.db"
    every = migrations("sqlite")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate_sqlite(conn, [m for m in every if m.version < 12])
        rows = [
            ("a", "queued", None),
            ("b", "queued", "key_x"),
            ("c", "succeeded", None),
            ("d", "succeeded", None),
            ("e", "failed", "key_x"),
        ]
        for job_id, status, owner in rows:
            conn.execute(
                "INSERT INTO jobs (id, status, owner, workflow, created_at, next_run_at) "
                "VALUES (?, ?, ?, '{}', 1.0, 1.0)",
                (job_id, status, owner),
            )
        assert migrate_sqlite(conn, every) == [m.version for m in every if m.version >= 12]
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        counts = await store.counts()
        assert (counts[JobStatus.QUEUED], counts[JobStatus.SUCCEEDED]) == (2, 2)
        assert counts[JobStatus.FAILED] == 1 and sum(counts.values()) == 5
        mine = await store.counts(owner="key_x")
        assert (mine[JobStatus.QUEUED], mine[JobStatus.FAILED], sum(mine.values())) == (1, 1, 2)
        assert await store.claim("w", 30, now=200.0) is not None
        counts = await store.counts(unfinished=True)
        assert (counts[JobStatus.QUEUED], counts[JobStatus.RUNNING]) == (1, 1)
    finally:
        await store.close()


async def test_a_keys_unfinished_count_is_recounted_by_the_upgrade(tmp_path: Path) -> None:
    """0015 sets each key's unfinished count to its jobs queued, running or canceling: expiry
    had counted finished jobs out a second time, leaving counts below zero."""
    path = tmp_path / "upgrade.db"
    every = migrations("sqlite")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate_sqlite(conn, [m for m in every if m.version < 15])
        for key_id, unfinished in (("key_x", -3), ("key_y", 5), ("key_z", 0)):
            conn.execute(
                "INSERT INTO api_keys (id, name, key_hash, created_at, unfinished) "
                "VALUES (?, ?, ?, 1.0, ?)",
                (key_id, key_id, f"hash-{key_id}", unfinished),
            )
        jobs = [
            ("a", "queued", "key_x"),
            ("b", "running", "key_x"),
            ("c", "canceling", "key_x"),
            ("d", "expired", "key_x"),
            ("e", "succeeded", "key_y"),
            ("f", "queued", None),
        ]
        for job_id, status, owner in jobs:
            conn.execute(
                "INSERT INTO jobs (id, status, owner, created_at, next_run_at) "
                "VALUES (?, ?, ?, 1.0, 1.0)",
                (job_id, status, owner),
            )
        assert migrate_sqlite(conn, every) == [m.version for m in every if m.version >= 15]
        found = dict(conn.execute("SELECT id, unfinished FROM api_keys").fetchall())
    assert found == {"key_x": 3, "key_y": 0, "key_z": 0}


async def test_jobs_stored_with_their_workflow_in_the_row_keep_it_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """0014 moves each job's workflow to job_workflows; the store reads it back at a get, a
    claim and a listing, and a job deleted takes its workflow with it."""
    path = tmp_path / "upgrade.db"
    every = migrations("sqlite")
    workflows = {
        "a": '{"1":{"class_type":"KSampler","inputs":{"seed":1}}}',
        "b": '{"2":{"class_type":"SaveImage","inputs":{"text":"' + "x" * 20_000 + '"}}}',
    }
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate_sqlite(conn, [m for m in every if m.version < 14])
        for n, (job_id, workflow) in enumerate(workflows.items()):
            conn.execute(
                "INSERT INTO jobs (id, status, workflow, created_at, next_run_at) "
                "VALUES (?, 'queued', ?, ?, ?)",
                (job_id, workflow, 1.0 + n, 1.0 + n),
            )
        assert migrate_sqlite(conn, every) == [m.version for m in every if m.version >= 14]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        assert "workflow" not in columns
        moved = dict(conn.execute("SELECT job_id, workflow FROM job_workflows").fetchall())
        assert moved == workflows
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        import json

        got = await store.get("b")
        assert got is not None and got.workflow == json.loads(workflows["b"])
        claimed = await store.claim("w", 30, now=200.0)
        assert claimed is not None and claimed.id == "a"
        assert claimed.workflow == json.loads(workflows["a"])
        listed = await store.list(limit=10)
        assert {j.id: j.workflow for j in listed.jobs} == {
            k: json.loads(v) for k, v in workflows.items()
        }
        assert await store.delete("b")
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert [r[0] for r in conn.execute("SELECT job_id FROM job_workflows")] == ["a"]
