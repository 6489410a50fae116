"""Single flight for the model cache's downloads: concurrent requests for one file share one
download; a waiter that gives up does not cancel it for the others (the last one to leave
does); its progress goes to every waiter, and one that joins late hears where it stands at
once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from comfyrun.models.records import ModelProgress, Progress
from comfyrun.models.specs import ModelRef

#: starts the download of a file, reporting its progress; returns its blake3
Fetch = Callable[[ModelRef, Progress], Coroutine[Any, Any, str]]


class Flights:
    """The downloads in progress, by the key of the file they fetch (its hash or source)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._flights: dict[str, _Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def join(self, ref: ModelRef, progress: ModelProgress | None) -> str:
        """The blake3 of `ref`'s bytes, downloaded by the flight this joins or starts."""
        key = ref.hash or ref.source
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            task = asyncio.get_running_loop().create_task(self._fetch(ref, flight.report))
            flight.task = task
            self._flights[key] = flight
            done = flight

            def landed(task: asyncio.Task[str]) -> None:
                if self._flights.get(key) is done:
                    del self._flights[key]
                if not task.cancelled():
                    # its waiters get the error; when all of them left (their jobs canceled)
                    # asyncio would log it as never retrieved, with its traceback
                    task.exception()

            task.add_done_callback(landed)
        assert flight.task is not None
        listener = flight.listen(ref, progress) if progress is not None else None
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if listener is not None:
                flight.listeners.remove(listener)
            if flight.waiters == 0 and not flight.task.done():
                # every job that wanted it left (canceled): nobody waits for its retries; and
                # nobody joins it now (until its task ended, one asking for the same file
                # joined it and got its CancelledError)
                flight.task.cancel()
                if self._flights.get(key) is flight:
                    del self._flights[key]


@dataclass(slots=True)
class _Flight:
    """One download in progress, and the requesters following its progress."""

    task: asyncio.Task[str] | None = None
    listeners: list[tuple[ModelRef, ModelProgress]] = field(default_factory=list)
    done: int = 0
    total: int | None = None
    started: bool = False
    waiters: int = 0

    def listen(self, ref: ModelRef, tell: ModelProgress) -> tuple[ModelRef, ModelProgress]:
        listener = (ref, tell)
        self.listeners.append(listener)
        if self.started:
            tell(ref, self.done, self.total)
        return listener

    def report(self, done: int, total: int | None) -> None:
        self.done, self.total, self.started = done, total, True
        for ref, tell in list(self.listeners):
            tell(ref, done, total)


__all__ = ["Fetch", "Flights"]
