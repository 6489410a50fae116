"""The SQL files parse: named queries, numbered migrations, statement splitting."""

from __future__ import annotations

import pytest

from comfyrun.store.migrate import migrations, statements
from comfyrun.store.queries import parse_queries, queries

DIALECTS = ["sqlite", "postgresql"]


def test_parse_queries() -> None:
    text = "-- header\n-- name: a\n-- why\nSELECT 1;\n\n-- name: b\nSELECT\n  2;\n"
    assert parse_queries(text) == {"a": "SELECT 1", "b": "SELECT\n  2"}
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")


def test_both_dialects_have_the_shared_queries() -> None:
    shared = {"insert_job", "claim", "renew", "transition", "list", "queue_position", "get"}
    for dialect in DIALECTS:
        assert shared <= set(queries(dialect))
    # the PostgreSQL extras: an advisory lock per idempotency key; a plain job queued in one
    # statement (its own transaction: SQLite's calls share a transaction, and cost no round
    # trip); a change's events in one statement (the same); a claim of the queue's head in
    # one statement, its candidate by the claim order it takes, and a plain job's end (the same);
    # an event appended, and a progress snapshot, each in one statement (the same)
    extras = {"lock_key", "enqueue_plain", "insert_events", "claim_one"}
    extras |= {"claim_next", "claim_next_comfy", "claim_next_type", "end_plain"}
    extras |= {"append_one", "progress_one"}
    assert set(queries("postgresql")) - set(queries("sqlite")) == extras
    # the SQLite extras: a job's workflow goes in a table of its own (0014_job_workflows;
    # PostgreSQL keeps a large value out of line, TOAST, and an UPDATE does not rewrite it); a
    # claim of one type's head in one statement (PostgreSQL's is claim_one's)
    sqlite_extras = {"insert_workflow", "claim_comfy", "claim_type"}
    assert set(queries("sqlite")) - set(queries("postgresql")) == sqlite_extras


@pytest.mark.parametrize("dialect", DIALECTS)
def test_migrations_are_numbered_from_one(dialect: str) -> None:
    found = migrations(dialect)
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "initial"


def test_statement_splitting() -> None:
    script = "-- c\nCREATE TABLE a (x TEXT DEFAULT ';');\n\nCREATE INDEX i ON a (x);\n"
    assert statements(script) == [
        "CREATE TABLE a (x TEXT DEFAULT ';');",
        "CREATE INDEX i ON a (x);",
    ]
    with pytest.raises(ValueError, match="incomplete"):
        statements("CREATE TABLE a (x TEXT")
