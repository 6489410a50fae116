"""PostgreSQL: waiters keep waking after the LISTEN connection is killed (it reconnects)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from tests.support.store import drop_schema, new_job, new_schema_name, pg_dsn, require_pg

from comfyrun.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


async def test_listener_reconnects_after_its_backend_is_killed() -> None:
    require_pg()
    schema = new_schema_name()
    node_a = PostgresStore(pg_dsn(), schema=schema)
    node_b = PostgresStore(pg_dsn(), schema=schema)
    await node_a.open()
    await node_b.open()
    try:
        job, _ = await node_b.enqueue(new_job())
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = %s AND pid <> pg_backend_pid()",
                (f'LISTEN "{node_a.channel}"',),
            ).fetchall()
        assert len(killed) == 2  # both nodes' listeners
        last = (await node_a.events_since(job.id))[-1].id
        for round_ in range(3):  # the first rounds may race the reconnect; none may be lost
            waiter = asyncio.create_task(node_a.wait_for_event(job.id, last, 60))
            await asyncio.sleep(0.2)
            event = await node_b.append_event(job.id, "log", {"round": round_})
            events = await asyncio.wait_for(waiter, 15)
            assert [e.id for e in events] == [event.id]
            last = event.id
    finally:
        await node_a.close()
        await node_b.close()
        drop_schema(schema)
