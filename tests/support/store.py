"""Helpers for the store tests: job factories and per-test stores of every kind.

PostgreSQL tests use COMFYRUN_TEST_PG_DSN (default postgresql://postgres@127.0.0.1:5432/test) and
give each test its own schema, dropped afterwards. When the server cannot be reached they skip,
except under CI=true, where they fail: CI must not go green without PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from comfyrun.core.job import NewJob
from comfyrun.store.base import JobStore
from comfyrun.store.factory import open_store
from comfyrun.store.postgres import PostgresStore

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
KINDS = ("memory", "sqlite", "postgres")


def pg_dsn() -> str:
    return os.environ.get("COMFYRUN_TEST_PG_DSN", DEFAULT_PG_DSN)


def pg_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(pg_dsn(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {pg_dsn()} unreachable: {exc}".strip()
    return None


def require_pg() -> None:
    """Skip (or, under CI=true, fail) when PostgreSQL cannot be reached."""
    reason = pg_reachable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(f"{reason} (set COMFYRUN_TEST_PG_DSN)")


def new_schema_name() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL store URL in a fresh schema, dropped afterwards (skips without PostgreSQL)."""
    require_pg()
    schema = new_schema_name()
    sep = "&" if "?" in pg_dsn() else "?"
    try:
        yield f"{pg_dsn()}{sep}schema={schema}"
    finally:
        drop_schema(schema)


def kill_listeners(channel: str) -> int:
    """Terminate the server side of every connection LISTENing on `channel` (what a dropped
    connection looks like to the stores); how many there were."""
    import psycopg

    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query = %s AND pid <> pg_backend_pid()",
            (f'LISTEN "{channel}"',),
        ).fetchall()
    return len(killed)


@asynccontextmanager
async def pg_api_and_worker() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two PostgreSQL stores on one fresh schema, opened (an API node's and a worker's, as two
    processes have them), both listening; skips where PostgreSQL is not reachable."""
    require_pg()
    schema = new_schema_name()
    api, worker = PostgresStore(pg_dsn(), schema=schema), PostgresStore(pg_dsn(), schema=schema)
    await api.open()
    await worker.open()
    try:
        for store in (api, worker):  # (each listens at once)
            await asyncio.wait_for(store._listening.wait(), 10.0)
        yield api, worker
    finally:
        await api.close()
        await worker.close()
        drop_schema(schema)


def store_url(kind: str, tmp_path: Path, schema: str | None = None) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    if kind == "postgres":
        sep = "&" if "?" in pg_dsn() else "?"
        return f"{pg_dsn()}{sep}schema={schema or new_schema_name()}"
    raise ValueError(kind)


@asynccontextmanager
async def store_of(kind: str, tmp_path: Path) -> AsyncIterator[JobStore]:
    """A fresh, opened store of `kind`, closed (and its schema dropped) afterwards."""
    schema = None
    if kind == "postgres":
        require_pg()
        schema = new_schema_name()
    store = open_store(store_url(kind, tmp_path, schema))
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        if schema is not None:
            drop_schema(schema)


def new_job(**kwargs: Any) -> NewJob:
    """A NewJob with a small workflow; keyword arguments override its fields."""
    kwargs.setdefault("workflow", {"1": {"class_type": "KSampler", "inputs": {"seed": 1}}})
    return NewJob(**kwargs)


__all__ = [
    "KINDS",
    "drop_schema",
    "new_job",
    "new_schema_name",
    "pg_dsn",
    "require_pg",
    "store_of",
    "store_url",
]


def fail_the_end_once(store: Any, *, committed: bool, times: int = 1) -> list[Any]:
    """Make `store`'s next SUCCEED transition raise a StoreError, as a PostgreSQL connection
    dropped under it would: the write lost, or (`committed`) made with its answer lost; with
    `times`, that many SUCCEED transitions in a row (a store failing a while: the disk full).
    The list returned holds the event each time it failed."""
    from comfyrun.core.state import Event
    from comfyrun.errors import StoreError

    transition = store.transition
    failed: list[Any] = []

    async def failing_once(job_id: str, event: Event, **kwargs: Any) -> Any:
        if event is Event.SUCCEED and len(failed) < times:
            failed.append(event)
            if committed and len(failed) == times:
                await transition(job_id, event, **kwargs)
            raise StoreError("PostgreSQL failed: terminating connection")
        return await transition(job_id, event, **kwargs)

    store.transition = failing_once
    return failed
