"""Choose a JobStore by URL scheme; the optional backends are imported only when asked for.

    memory://                          in-process dicts (tests, throwaway servers)
    sqlite:///relative/or/abs.db       one SQLite file in WAL mode (sqlite:////abs/path.db too);
                                       `?synchronous=NORMAL` trades power-cut durability for speed
    sqlite:///:memory:                 a private in-memory SQLite database (one process)
    postgresql://user@host:5432/db     PostgreSQL; `?schema=name` keeps the tables in that schema,
                                       `?pool_min=1&pool_max=10` sizes the connection pool

The store is returned unopened: `await store.open()` connects and applies migrations (the app's
lifespan does this), `await store.close()` releases it. The concrete stores are also async
context managers.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from comfyrun.errors import InvalidRequest
from comfyrun.store.base import JobStore
from comfyrun.store.memory import MemoryStore


def open_store(url: str) -> JobStore:
    """The store `url` names (unopened). Raises InvalidRequest for an unknown scheme."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        path = sqlite_path(url)
        options = dict(parse_qsl(urlsplit(url).query))
        from comfyrun.store.sqlite import SQLiteStore

        sqlite_store: JobStore = SQLiteStore(path, synchronous=options.get("synchronous", "FULL"))
        return sqlite_store
    if scheme in {"postgresql", "postgres"}:
        try:
            from comfyrun.store.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - psycopg is a declared dependency
            raise InvalidRequest(
                "the PostgreSQL store needs psycopg: pip install 'psycopg[binary,pool]'"
            ) from exc
        dsn, ours = split_options(url, {"schema", "pool_min", "pool_max"})
        try:
            pool = {k[5:] + "_size": int(v) for k, v in ours.items() if k.startswith("pool_")}
        except ValueError as exc:
            raise InvalidRequest("pool_min and pool_max are integers", details=ours) from exc
        pg_store: JobStore = PostgresStore(dsn, schema=ours.get("schema", "public"), **pool)
        return pg_store
    raise InvalidRequest(
        f"unknown store URL scheme {scheme!r}: use memory://, sqlite:///path.db or postgresql://…",
        details={"url": _redact(url)},
    )


def check_store_url(url: str) -> None:
    """What can be told of `url` before opening it (InvalidRequest): a known scheme, and for a
    SQLite file an existing folder to hold it (SQLite creates the file, not its folder)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in {"memory", "sqlite", "postgresql", "postgres"}:
        open_store(url)  # raises, naming the schemes
    if scheme == "sqlite":
        path = sqlite_path(url)
        folder = os.path.dirname(path) or "."
        if path != ":memory:" and not os.path.isdir(folder):
            raise InvalidRequest(
                f"the SQLite database's folder {folder} does not exist", details={"url": url}
            )


def sqlite_path(url: str) -> str:
    """`sqlite:///x.db` → "x.db", `sqlite:////abs/x.db` → "/abs/x.db", `sqlite:///:memory:`."""
    prefix = "sqlite:///"
    if not url.lower().startswith(prefix) or len(url) == len(prefix):
        raise InvalidRequest(
            "a SQLite store URL looks like sqlite:///path/to.db", details={"url": url}
        )
    return url[len(prefix) :].split("?", 1)[0]


def split_options(url: str, ours: set[str]) -> tuple[str, dict[str, str]]:
    """The URL without our query parameters (the rest go to libpq), and ours."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    rest = [(k, v) for k, v in query if k not in ours]
    return urlunsplit(parts._replace(query=urlencode(rest))), {k: v for k, v in query if k in ours}


def split_schema(url: str) -> tuple[str, str]:
    """The DSN without our `schema` query parameter, and that schema (default "public")."""
    dsn, ours = split_options(url, {"schema"})
    return dsn, ours.get("schema", "public")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


__all__ = ["open_store", "split_options", "split_schema", "sqlite_path"]
