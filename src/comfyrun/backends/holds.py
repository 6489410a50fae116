"""An admin's holds on backends (drained, kept stopped: backends.control), kept across a restart
of the process that runs them, so a backend taken out of service (a broken GPU) stays out after
a deploy.

The holds of one process live in `<data_dir>/worker/holds-<worker id>.json`. The worker id is the
one a restart gets back (dispatch.identity: `<data_dir>/worker/id` and the slot this process
locks, or the configured `worker_id`): two processes sharing a data dir hold different slots and
keep their own holds; a restarted process takes its predecessor's slot, and its holds. Each
change is written whole (a temporary file, then a rename), off the event loop, one write at a
time and the last state last. The pool reads the file as it starts, before it takes a job: a
hold on a name no backend has now is dropped (logged). A restart under way is no hold: it is not
kept (the restarted process has its backend's process to start anyway).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from comfyrun.backends.backend import Backend

log = logging.getLogger(__name__)

VERSION = 1


@dataclass(frozen=True)
class Hold:
    """An admin's hold on one backend: drained (no new job), kept stopped (a managed one's
    process not started by a job)."""

    drained: bool = False
    kept_stopped: bool = False


class HoldFile:
    """One process's holds, by backend name, in one JSON file. Blocking I/O: call it from a
    thread (HoldKeeper does)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def of_worker(cls, data_dir: Path, worker_id: str) -> HoldFile:
        """The file of the process whose worker id is `worker_id` in `data_dir`."""
        return cls(data_dir / "worker" / f"holds-{quote(worker_id, safe='')}.json")

    def read(self) -> dict[str, Hold]:
        """The holds kept; none when there is no file, or one that cannot be read (logged)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data: Any = json.loads(text)
            return {
                str(name): Hold(bool(h.get("drained")), bool(h.get("kept_stopped")))
                for name, h in dict(data["backends"]).items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "the backends' holds in %s cannot be read (%s): no backend is held",
                self.path,
                exc,
                extra={"action": "backend_holds"},
            )
            return {}

    def write(self, holds: Mapping[str, Hold]) -> None:
        """Replace the file with `holds` at once: a reader sees the old holds or the new."""
        backends = {
            name: {"drained": h.drained, "kept_stopped": h.kept_stopped}
            for name, h in sorted(holds.items())
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                json.dump({"version": VERSION, "backends": backends}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


def holds_of(backends: Iterable[Backend]) -> dict[str, Hold]:
    """The holds to keep: a restart under way (restart_pending) is none."""
    return {
        b.name: Hold(b.draining, b.kept_stopped) for b in backends if b.draining or b.kept_stopped
    }


class HoldKeeper:
    """Keeps the holds of a pool's backends in a HoldFile: read back as the pool starts, written
    on each change."""

    def __init__(self, file: HoldFile, backends: Callable[[], Iterable[Backend]]) -> None:
        self.file = file
        self._backends = backends
        self._lock = asyncio.Lock()
        self._written: dict[str, Hold] | None = None
        self._saves: set[asyncio.Task[None]] = set()

    async def restore(self) -> None:
        """Hold each backend as the file says (before the pool takes a job)."""
        kept = await asyncio.to_thread(self.file.read)
        self._written = kept
        backends = {b.name: b for b in self._backends()}
        for name, hold in kept.items():
            backend = backends.get(name)
            if backend is None:
                log.warning(
                    "backend %s was held (%s) before the restart but is no longer configured: "
                    "its hold is dropped",
                    name,
                    _words(hold),
                    extra={"action": "backend_holds", "backend": name},
                )
                continue
            backend.draining = hold.drained
            backend.kept_stopped = hold.kept_stopped
            if hold.kept_stopped and backend.process is None:
                # no process of it to keep stopped now (configured by URL): held as stop does
                backend.draining, backend.kept_stopped = True, False
            log.info(
                "backend %s: %s (an admin's hold, kept across the restart)",
                name,
                _words(Hold(backend.draining, backend.kept_stopped)),
                extra={"action": "backend_admin", "backend": name},
            )
        self.changed()  # the file rewritten when it named what is dropped or changed

    def changed(self) -> None:
        """A hold may have changed: write the holds, in the background (see `saved`)."""
        task = asyncio.get_running_loop().create_task(self._save(), name="backend-holds")
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)

    async def saved(self) -> None:
        """Return once the changes made so far are written (or failed to be: logged)."""
        while pending := [t for t in self._saves if not t.done()]:
            await asyncio.gather(*pending)

    async def _save(self) -> None:
        async with self._lock:  # one write at a time; each writes the holds as they are now
            holds = holds_of(self._backends())
            if holds == self._written:
                return
            try:
                await asyncio.to_thread(self.file.write, holds)
            except OSError as exc:
                log.warning(
                    "the backends' holds cannot be written to %s (%s): a restart forgets them",
                    self.file.path,
                    exc,
                    extra={"action": "backend_holds"},
                )
                return
            self._written = holds


def _words(hold: Hold) -> str:
    return " and ".join(
        w for w, on in (("drained", hold.drained), ("kept stopped", hold.kept_stopped)) if on
    )


__all__ = ["Hold", "HoldFile", "HoldKeeper", "holds_of"]
