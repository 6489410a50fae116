"""Named SQL queries, kept in `sql/<dialect>/queries.sql` (a `-- name: x` line starts query x)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def sql_text(dialect: str, filename: str) -> str:
    return (resources.files("comfyrun.store") / "sql" / dialect / filename).read_text("utf-8")


def parse_queries(text: str) -> dict[str, str]:
    """{name: sql} from a queries file; comment lines inside a query are dropped."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        sql = "\n".join(lines).strip().rstrip(";").strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = sql
    return queries


@cache
def queries(dialect: str) -> dict[str, str]:
    return parse_queries(sql_text(dialect, "queries.sql"))


__all__ = ["parse_queries", "queries", "sql_text"]
