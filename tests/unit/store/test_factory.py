"""open_store picks the store by URL scheme; bad URLs are a clear InvalidRequest."""

from __future__ import annotations

import pytest

from comfyrun.errors import InvalidRequest
from comfyrun.store.factory import open_store, split_schema, sqlite_path
from comfyrun.store.memory import MemoryStore


def test_memory_url() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


@pytest.mark.parametrize("url", ["redis://x", "nonsense", "", "sqlite://", "sqlite:///"])
def test_unknown_or_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        open_store(url)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///jobs.db", "jobs.db"),
        ("sqlite:////var/lib/jobs.db", "/var/lib/jobs.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///a/b.db?mode=x", "a/b.db"),
    ],
)
def test_sqlite_paths(url: str, path: str) -> None:
    assert sqlite_path(url) == path


def test_schema_is_split_off_the_dsn() -> None:
    dsn, schema = split_schema("postgresql://u@h:5432/db?schema=t1&sslmode=disable")
    assert schema == "t1"
    assert dsn == "postgresql://u@h:5432/db?sslmode=disable"
    assert split_schema("postgresql://u@h/db") == ("postgresql://u@h/db", "public")


def test_sqlite_synchronous_option() -> None:
    from comfyrun.store.sqlite import SQLiteStore

    store = open_store("sqlite:///x.db?synchronous=normal")
    assert isinstance(store, SQLiteStore) and store.synchronous == "NORMAL"
    assert open_store("sqlite:///x.db").synchronous == "FULL"  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequest):
        open_store("sqlite:///x.db?synchronous=sometimes")


def test_postgres_pool_options() -> None:
    from comfyrun.store.postgres import PostgresStore

    store = open_store("postgresql://u@h/db?schema=s1&pool_min=2&pool_max=20&sslmode=disable")
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.min_size, store.max_size) == ("s1", 2, 20)
    assert store.dsn == "postgresql://u@h/db?sslmode=disable"
    with pytest.raises(InvalidRequest):
        open_store("postgresql://u@h/db?pool_max=many")
    with pytest.raises(InvalidRequest):
        open_store("postgresql://u@h/db?schema=bad-name")
