"""One managed ComfyUI child process: spawned into a session of its own with its output in the
backend's log, brought up until it answers (on another port when its port was taken meanwhile),
and terminated with its whole process group. The supervisor (`supervisor.py`) decides when."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from comfyrun.backends.logs import ProcessLog
from comfyrun.backends.ports import (
    PortPicker,
    fixed_port_taken,
    port_is_free,
    says_port_in_use,
)
from comfyrun.backends.process import readiness
from comfyrun.backends.process.groups import group_alive, signal_group, tied_to_parent
from comfyrun.backends.process.spec import HOST, ManagedSpec
from comfyrun.errors import BackendError

logger = logging.getLogger(__name__)

#: How many of the log's last lines an error message quotes.
LOG_LINES_IN_ERRORS = 8


class StartFailed(BackendError):
    """A start attempt failed (internal to the supervisor: its callers get a BackendError from
    `ManagedProcess._error()`)."""

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass(eq=False)
class Child:
    """A spawned ComfyUI: its process, its port, where its output starts in the log, and the
    tasks that watch it once adopted."""

    proc: asyncio.subprocess.Process
    port: int
    log_offset: int
    unresponsive: bool = False
    watcher: asyncio.Task[None] | None = None
    health: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def with_tail(log: ProcessLog, message: str) -> str:
    """`message` followed by the log's last lines, if it has any."""
    tail = log.tail(LOG_LINES_IN_ERRORS)
    if not tail:
        return message
    return f"{message}\nlast lines of {log.path}:\n" + "\n".join(tail)


async def launch(
    spec: ManagedSpec, log: ProcessLog, folders: Sequence[Path], port_picker: PortPicker
) -> Child:
    """A ready child (answering, warmed up if the spec says so) on a port of its own: tried again
    on another picked port when the one it was given was taken meanwhile, at most
    `spec.port_attempts` times. `folders`: created first (ComfyUI's input and output folders).
    Raises StartFailed, fatal when trying again would not help."""
    # off the loop: the first call discovers the interpreter (it may run candidates)
    problem = await asyncio.to_thread(spec.problem)
    if problem is not None:
        log.note(f"not started: {problem}")
        raise StartFailed(problem, fatal=True)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    if spec.port is not None and not port_is_free(spec.port, HOST):
        # whatever listens there would answer the readiness probe in its place
        log.note(f"not started: port {spec.port} is in use")
        raise StartFailed(fixed_port_taken(spec.name, spec.port), fatal=False)
    attempts = 1 if spec.port is not None else max(1, spec.port_attempts)
    for _ in range(attempts):
        port = spec.port if spec.port is not None else port_picker()
        child = await spawn(spec, log, port)
        warmed = True
        try:
            failure = await readiness.wait_ready(child.proc, child.url, spec)
            if failure is None and spec.warmup_prompt is not None:
                failure = await readiness.warm_up(child.proc, child.url, spec)
                warmed = failure is None
        except BaseException:
            await asyncio.shield(terminate(child, 0))
            raise
        if failure is None:
            return child
        # shielded: a stop() arriving now must not leave this child half-terminated
        await asyncio.shield(terminate(child, spec.stop_grace_s))
        if not warmed:
            raise StartFailed(with_tail(log, failure), fatal=True)
        output = log.read_from(child.log_offset)
        if child.proc.returncode not in (None, -signal.SIGTERM, -signal.SIGKILL) and (
            says_port_in_use(output)
        ):
            if spec.port is not None:
                raise StartFailed(fixed_port_taken(spec.name, spec.port), fatal=False)
            logger.warning(
                "backend %s: port %d was taken, trying another",
                spec.name,
                port,
                extra={"action": "backend_port_taken", "backend": spec.name},
            )
            continue
        raise StartFailed(with_tail(log, failure), fatal=False)
    raise StartFailed(
        f"backend {spec.name!r} could not bind a free port in {spec.port_attempts} "
        "attempts; something keeps taking the ports comfyrun picks",
        fatal=False,
    )


async def spawn(spec: ManagedSpec, log: ProcessLog, port: int) -> Child:
    """The child started on `port` in a session of its own, its output appended to `log`."""
    argv = spec.argv(port)
    command = argv
    if spec.die_with_parent:
        launcher = spec.interpreter if spec.comfy_path is not None else sys.executable
        command = tied_to_parent(argv, launcher)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
    with log.open_for_child() as out:
        offset = out.tell()
        out.write(f"[comfyrun] starting: {shlex.join(argv)}\n".encode())
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=spec.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StartFailed(
                f"backend {spec.name!r} could not run {argv[0]!r}: {exc}; fix the "
                "backend's python/command",
                fatal=True,
            ) from None
    logger.info(
        "backend %s: started pid %d on port %d",
        spec.name,
        proc.pid,
        port,
        extra={"action": "backend_spawn", "backend": spec.name, "pid": proc.pid},
    )
    return Child(proc=proc, port=port, log_offset=offset)


async def terminate(child: Child, grace: float) -> None:
    """TERM the group, KILL it after `grace`, and wait until none of it is left."""
    pgid = child.proc.pid
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    if grace > 0:
        signal_group(pgid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.proc.wait(), grace)
        # No event tells us when a grandchild exits; a short bounded poll does.
        while group_alive(pgid) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)
    await child.proc.wait()
    for _ in range(100):  # SIGKILL is not instant; wait (bounded) until the kernel is done
        if not group_alive(pgid):
            break
        await asyncio.sleep(0.02)


__all__ = [
    "LOG_LINES_IN_ERRORS",
    "Child",
    "StartFailed",
    "launch",
    "spawn",
    "terminate",
    "with_tail",
]
