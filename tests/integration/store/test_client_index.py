"""A ComfyUI /ws client's unfinished prompts are found by an index, not by a scan of every
unfinished job (a script that opens a socket per prompt, with a deep queue)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.store import new_job

from comfyrun.store.base import COMFY_CLIENT_ID
from comfyrun.store.queries import queries
from comfyrun.store.sqlite import SQLiteStore


async def test_sqlite_finds_a_clients_prompts_through_its_index(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        for i in range(50):
            await store.enqueue(new_job(metadata={COMFY_CLIENT_ID: f"c{i % 5}"}))
        assert len(await store.unfinished_for_client("c3")) == 10
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        params = {"client_id": "c3", "owner": None, "limit": 500}
        plan = conn.execute(
            "EXPLAIN QUERY PLAN " + queries("sqlite")["unfinished_for_client"], params
        ).fetchall()
    finally:
        conn.close()
    assert any("USING INDEX jobs_comfy_client" in str(row[-1]) for row in plan), plan


def test_the_index_key_is_the_relays_client_key() -> None:
    """The SQL names the metadata key literally: it must be the one the ComfyUI face writes."""
    from comfyrun.api.compat.comfy import META_CLIENT_ID

    assert META_CLIENT_ID == COMFY_CLIENT_ID
    assert f"'$.{COMFY_CLIENT_ID}'" in queries("sqlite")["unfinished_for_client"]
    assert f"'{COMFY_CLIENT_ID}'" in queries("postgresql")["unfinished_for_client"]


def test_a_keys_oldest_queued_job_reads_only_its_index(tmp_path: Path) -> None:
    """An API key's oldest queued job is found from jobs_owner_status alone (a covering
    index): no other key's jobs, and none of the rows, are read. (Its counts read job_counts:
    test_claim_plan.)"""
    from comfyrun.store.migrate import migrate_sqlite

    conn = sqlite3.connect(tmp_path / "jobs.db")
    try:
        migrate_sqlite(conn)
        for name in ("oldest_queued_at_of_owner",):
            plan = conn.execute(
                "EXPLAIN QUERY PLAN " + queries("sqlite")[name], {"owner": "k1"}
            ).fetchall()
            assert any("USING COVERING INDEX jobs_owner_status" in str(row[-1]) for row in plan), (
                name,
                plan,
            )
    finally:
        conn.close()
