"""Health of one backend: the rules (pure) and the probe (one GET /system_stats with a timeout).

A backend is healthy when its HTTP API answers and its websocket is connected. A closed
websocket only stops new jobs from going there (the client reconnects and reconciles its
prompts itself); `failure_threshold` failed probes in a row mean the backend is down, and the
jobs on it are given up and retried elsewhere. A backend put in quarantine (a prompt that did not
stop when interrupted) comes back only once ComfyUI reports nothing running.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HealthSettings:
    interval_s: float = 5.0  # between probes of a backend that looks fine
    timeout_s: float = 5.0  # for one probe
    failure_threshold: int = 2  # failed probes in a row before the backend is down
    down_interval_s: float = 1.0  # between probes of a backend that is down


@dataclass(frozen=True, slots=True)
class Health:
    """The health facts about one backend; `replace` them through the functions below."""

    http_ok: bool = False
    ws_connected: bool = False
    failures: int = 0
    quarantined: bool = False
    checked: bool = False  # at least one probe has answered or failed

    @property
    def accepting(self) -> bool:
        return self.http_ok and self.ws_connected and not self.quarantined

    @property
    def down(self) -> bool:
        return self.failures > 0 and not self.http_ok


def after_probe(health: Health, *, ok: bool, idle: bool | None, threshold: int) -> Health:
    """The health after one probe. `idle` is ComfyUI's queue being empty (None: not asked)."""
    if ok:
        quarantined = health.quarantined and not bool(idle)
        return Health(
            http_ok=True,
            ws_connected=health.ws_connected,
            failures=0,
            quarantined=quarantined,
            checked=True,
        )
    failures = health.failures + 1
    return Health(
        http_ok=health.http_ok and failures < threshold,
        ws_connected=health.ws_connected,
        failures=failures,
        quarantined=health.quarantined,
        checked=True,
    )


def after_ws(health: Health, connected: bool) -> Health:
    return Health(
        http_ok=health.http_ok,
        ws_connected=connected,
        failures=health.failures,
        quarantined=health.quarantined,
        checked=health.checked,
    )


def quarantine(health: Health, threshold: int) -> Health:
    """Taken out of service until ComfyUI is idle again; counts as down right away."""
    return Health(
        http_ok=False,
        ws_connected=health.ws_connected,
        failures=max(health.failures, threshold),
        quarantined=True,
        checked=True,
    )


class ProbeClient(Protocol):
    async def system_stats(self) -> Any: ...

    async def queue(self) -> Any: ...


async def probe(
    client: ProbeClient, *, timeout_s: float, ask_idle: bool
) -> tuple[bool, bool | None]:
    """(answered, idle): one GET /system_stats, plus GET /queue when `ask_idle`."""
    try:
        async with asyncio.timeout(timeout_s):
            await client.system_stats()
            if not ask_idle:
                return True, None
            queue = await client.queue()
            return True, not list(getattr(queue, "running", []))
    except (TimeoutError, Exception) as exc:  # a probe never raises: any failure is "down"
        log.debug("health probe failed: %r", exc)
        return False, None


__all__ = [
    "Health",
    "HealthSettings",
    "ProbeClient",
    "after_probe",
    "after_ws",
    "probe",
    "quarantine",
]
