"""When a claimer should look for work again without a wake-up: the earliest time a job it put
back (a retry with backoff) becomes runnable, bounding its idle wait."""

from __future__ import annotations

import time


class RetryClock:
    """`note(run_at)` for each job put back; `idle_timeout()` is how long to wait for new work:
    `idle_wait_s`, or less when a noted job becomes runnable sooner."""

    def __init__(self, idle_wait_s: float) -> None:
        self.idle_wait_s = idle_wait_s
        self._next: float | None = None

    def note(self, run_at: float) -> None:
        if self._next is None or run_at < self._next:
            self._next = run_at

    def idle_timeout(self) -> float:
        timeout = self.idle_wait_s
        if self._next is not None:
            until = self._next - time.time()
            if until <= 0:
                self._next = None
            else:
                timeout = min(timeout, until + 0.001)
        return timeout


__all__ = ["RetryClock"]
