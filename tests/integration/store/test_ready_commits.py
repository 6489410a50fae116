"""A store says whether it can commit, not only whether it answers reads (`/ready`): SQLite
locked by another process past its busy timeout, or out of space; PostgreSQL gone."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from tests.support.api import memory_settings
from tests.support.store import drop_schema, new_job, new_schema_name, pg_dsn, require_pg

from comfyrun.api.app import create_app
from comfyrun.api.routes import health
from comfyrun.errors import StoreError
from comfyrun.outputs.memory import MemoryOutputStorage
from comfyrun.store.base import JobStore
from comfyrun.store.postgres import PostgresStore
from comfyrun.store.sqlite import SQLiteStore
from comfyrun.store.writable import WriteHealth


@contextlib.asynccontextmanager
async def ready_client(tmp_path: Path, store: JobStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        memory_settings(tmp_path, role="api"), store=store, storage=MemoryOutputStorage()
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_sqlite_locked_past_its_busy_timeout_cannot_commit(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteStore(str(path), busy_timeout_s=0.05) as store:
        assert await store.can_commit() is None  # (its migrations just committed)
        store.write_health = WriteHealth(fresh_s=0)  # every check probes (no commit is recent)
        assert await store.can_commit() is None
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            assert "database is locked" in (await store.can_commit() or "")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await store.can_commit() is None


async def test_sqlite_out_of_space_cannot_commit_by_its_last_write(tmp_path: Path) -> None:
    async with SQLiteStore(str(tmp_path / "q.db")) as store:
        conn = store._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()["page_count"]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
        with pytest.raises(StoreError, match="full"):
            await store.enqueue(new_job(metadata={"blob": "x" * 200_000}))
        probes: list[None] = []
        store.probe_write = lambda: probes.append(None)  # type: ignore[method-assign,assignment,return-value]
        assert "full" in (await store.can_commit() or "")
        assert probes == []  # that failed write is recent: no probe write was needed


class Proxy:
    """A TCP proxy to PostgreSQL; `down()` closes it and every connection through it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.closed = False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a connection accepted while `down()` runs is closed too: one still opening its way
        # upstream was missed, and a pool's second connection kept the store "up" (1 run in
        # ~10 under load)
        self.writers.append(writer)
        if self.closed:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers.append(up_writer)
        if self.closed:
            writer.close()
            up_writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def down(self) -> None:
        assert self.server is not None
        self.closed = True
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest.mark.postgres
async def test_postgres_down_is_not_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_pg()
    monkeypatch.setattr(health, "STORE_WAIT_S", 0.5)  # (a reconnect waits longer than that)
    parts = urlsplit(pg_dsn())
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    dsn = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{port}"))
    schema = new_schema_name()
    store = PostgresStore(dsn, schema=schema, min_size=1, max_size=2, connect_timeout_s=5)
    try:
        async with ready_client(tmp_path, store) as client:
            assert (await client.get("/ready")).status_code == 200
            await proxy.down()
            for _ in range(2):  # its pooled connection fails, then a new one cannot be had
                r = await client.get("/ready")
                assert r.status_code == 503 and r.json()["store"] is False, r.text
    finally:
        drop_schema(schema)
