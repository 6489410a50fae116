"""A line-driven Server-Sent Events decoder (no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One SSE frame: `event` name, JSON `data` and the `id` to resume after."""

    event: str
    data: dict[str, Any]
    id: str | None = None


class SSEDecoder:
    """Feed lines with `push`; it returns the events each blank line completes."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def push(self, line: str) -> list[ServerEvent]:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return []
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return []

    def _dispatch(self) -> list[ServerEvent]:
        if self._id is not None:
            self.last_id = self._id
        event, data, self._event, self._data, self._id = self._event, self._data, None, [], None
        if not data:
            return []
        raw = "\n".join(data)
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = {"raw": raw}
        if not isinstance(parsed, dict):
            parsed = {"value": parsed}
        return [ServerEvent(event or "message", parsed, self.last_id)]


__all__ = ["SSEDecoder", "ServerEvent"]
