"""The trips to a thread (`asyncio.to_thread`) the code under test makes, counted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


def thread_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that gets the name of the function of each `asyncio.to_thread` call from now on
    (for the rest of the test), in order; the calls still run in their thread."""
    trips: list[str] = []
    real = asyncio.to_thread

    async def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", "?"))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return trips
