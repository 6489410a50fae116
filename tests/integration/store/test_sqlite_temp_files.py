"""SQLite: the store's writes never go through temporary files. Each call runs in a savepoint
whose sub-journal (the pages it changed, to undo just that call) went to a temporary file once
past 64 KiB, created and removed again within a transaction: a few times a job under load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from comfyrun.store.sqlite import SQLiteStore


def temporary_files() -> list[str]:
    """SQLite's temporary files this process holds open (removed at once, still open)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "etilqs_" in target:
            found.append(target)
    return found


async def test_a_call_that_changes_many_pages_writes_no_temporary_file(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "q.db"))
    await store.open()
    try:

        async def fill(self: SQLiteStore) -> None:
            async with self._write() as conn:
                conn.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, body TEXT)")
                conn.executemany(
                    "INSERT INTO bulk (body) VALUES (?)", [("x" * 1000,) for _ in range(400)]
                )

        async def change_all(self: SQLiteStore) -> list[str]:
            async with self._write() as conn:  # ~100 pages, each one saved for the savepoint
                conn.execute("UPDATE bulk SET body = 'y' || body")
                return temporary_files()

        run: Any = store._call
        await run(fill, (), {}, read=False)
        held = await run(change_all, (), {}, read=False)
        assert held == []
    finally:
        await store.close()
