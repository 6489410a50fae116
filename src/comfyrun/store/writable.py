"""Whether a store can commit now, for readiness (`/ready`).

A store that answers reads may still be unable to write: SQLite on a full disk or a read-only
file, or locked by another process past its busy timeout; PostgreSQL down, read-only or out of
space. Asking it with a write at every `/ready` would add a commit per probe under load, so the
store notes the outcome of its own commits as they happen (`WriteHealth.ok` / `failed`); only
when none is recent does a readiness check make one tiny write of its own (`probe_write`: it
store.sqlprobe: it rewrites a `schema_version` row as it is), shared by the checks that come meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

#: An outcome younger than this (seconds) answers a check without a probe write.
FRESH_S = 5.0
#: How long a check waits for its probe write before it answers the last outcome known.
WAIT_S = 2.0


class WriteHealth:
    """The outcome of a store's latest commit (or write probe) as this process saw it.

    `ok` and `failed` may be called from the store's own thread (SQLite's commits): each is one
    assignment of an immutable tuple."""

    def __init__(
        self,
        *,
        fresh_s: float = FRESH_S,
        wait_s: float = WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_s, self.wait_s, self._clock = fresh_s, wait_s, clock
        # (when, None) after a commit; (when, why) after a failure; None before either
        self._latest: tuple[float, str | None] | None = None
        self._probing: asyncio.Task[None] | None = None

    def ok(self) -> None:
        self._latest = (self._clock(), None)

    def failed(self, error: str) -> None:
        if self.error is None:  # (once as it starts failing, not at every failed write)
            log.warning("store cannot commit: %s", error, extra={"action": "store_unwritable"})
        self._latest = (self._clock(), error)

    @property
    def error(self) -> str | None:
        """Why the latest write failed; None after a commit (or before any write)."""
        latest = self._latest
        return None if latest is None else latest[1]

    async def check(self, probe: Callable[[], Awaitable[None]]) -> str | None:
        """None when the store commits; else why not. Without a recent outcome, `probe` (one
        at a time) writes; a probe that has not ended within `wait_s` (a lock waited for) leaves
        the answer to the latest outcome known, until it ends."""
        latest = self._latest
        if latest is not None and self._clock() - latest[0] < self.fresh_s:
            return latest[1]
        if self._probing is None or self._probing.done():
            self._probing = asyncio.create_task(self._probe(probe), name="comfyrun-write-probe")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._probing), self.wait_s)
        return self.error

    async def _probe(self, probe: Callable[[], Awaitable[None]]) -> None:
        try:
            await probe()
        except Exception as exc:  # any failure to commit is the answer, not an error here
            self.failed(str(exc) or type(exc).__name__)
        else:
            self.ok()


class CanCommit(Protocol):
    async def can_commit(self) -> str | None:
        """None when a write commits now (by the latest commits' outcome, or a tiny write made
        to find out where none is recent); else why not (readiness)."""


__all__ = ["FRESH_S", "WAIT_S", "CanCommit", "WriteHealth"]
