"""Fixtures for the store integration tests: a store URL per real database kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.store import drop_schema, new_schema_name, require_pg, store_url


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for an empty database of each real kind (a SQLite file, a fresh PG schema)."""
    if request.param == "postgres":
        require_pg()
        schema = new_schema_name()
        yield store_url("postgres", tmp_path, schema)
        drop_schema(schema)
    else:
        yield store_url("sqlite", tmp_path)
