"""Managed ComfyUI processes: run one, wait until it answers, keep it alive, stop it cleanly.

Theory of operation
-------------------
A `ManagedProcess` supervises one ComfyUI described by a `ManagedSpec`: a ComfyUI folder whose
main.py it runs with a given Python, or a full command line. It starts the child lazily (the first
`ensure_started()`; concurrent callers share that one start) on a free 127.0.0.1 port it picks,
in a session of its own so that signals reach the child's own children too, with stdout and
stderr going straight into one log file per backend. The child is ready once GET /system_stats
answers (a bounded poll: a process offers no event to wait for) and, if the spec has one, a
warm-up prompt has run; the poll stops at once if the child exits.

    stopped ─▶ starting ─▶ ready ⇄ busy
                  │           │      │ exits, or stops answering
                  │           ▼      ▼
                  │         crashed ─▶ restarting ─▶ starting
                  ▼           │ restart budget spent
                error ◀───────┘              stop() from anywhere ─▶ stopped

Rules:
- A broken installation (no folder, no main.py, no Python) or a failure on a fresh start goes to
  `error` with a message that says what to fix, and stays there until `restart()`.
- A child that exits, or stops answering health probes, while it was wanted is `crashed` and is
  restarted after a jittered exponential backoff, at most `max_restarts` times per
  `restart_window_s`; the pool learns of the crash through `on_state_change` and retries the job.
- A child that exits during start-up because its port was taken meanwhile is started again on
  another port; that is not a crash.
- `stop()` sends SIGTERM to the child's process group, SIGKILL after `stop_grace_s`, and returns
  only when no process of the group is left.
- Idle stop: a `ready` process with no activity for `idle_stop_s` is stopped; the next
  `ensure_started()` starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from comfyrun.backends.logs import ProcessLog
from comfyrun.backends.ports import PortPicker, pick_free_port, says_port_in_use
from comfyrun.core.retry import backoff_delay
from comfyrun.errors import BackendError, InvalidRequest

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
_LOG_LINES_IN_ERRORS = 8


class ProcessState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    CRASHED = "crashed"
    RESTARTING = "restarting"
    ERROR = "error"


_S = ProcessState
#: Every state change the supervisor makes; anything else is a bug (and is logged as one).
TRANSITIONS: frozenset[tuple[ProcessState, ProcessState]] = frozenset(
    {
        (_S.STOPPED, _S.STARTING),
        (_S.STARTING, _S.READY),
        (_S.STARTING, _S.ERROR),
        (_S.STARTING, _S.CRASHED),
        (_S.STARTING, _S.STOPPED),
        (_S.READY, _S.BUSY),
        (_S.BUSY, _S.READY),
        (_S.READY, _S.CRASHED),
        (_S.BUSY, _S.CRASHED),
        (_S.READY, _S.STOPPED),
        (_S.BUSY, _S.STOPPED),
        (_S.CRASHED, _S.RESTARTING),
        (_S.CRASHED, _S.ERROR),
        (_S.CRASHED, _S.STOPPED),
        (_S.RESTARTING, _S.STARTING),
        (_S.RESTARTING, _S.STOPPED),
        (_S.ERROR, _S.STOPPED),
    }
)
#: States in which the process answers requests.
UP: frozenset[ProcessState] = frozenset({_S.READY, _S.BUSY})


@dataclass(frozen=True, slots=True)
class ComfyFolders:
    """Where a managed ComfyUI reads inputs and writes outputs, and the flags that say so."""

    input_dir: Path
    output_dir: Path
    temp_dir: Path
    flags: tuple[str, ...] = ()


_DIR_FLAGS = {
    "input": "--input-directory",
    "output": "--output-directory",
    "temp": "--temp-directory",
}


@dataclass(frozen=True, kw_only=True)
class ManagedSpec:
    """How to run one ComfyUI. Give either `comfy_path` (a ComfyUI folder) or `command`.

    comfyrun always appends `--listen 127.0.0.1 --port <free port>` (ComfyUI's argparse keeps
    the last value), and `--input-directory`/`--output-directory`/`--temp-directory` only when it
    cannot tell from the folder or the arguments where those folders are.
    """

    name: str
    log_dir: Path
    comfy_path: Path | None = None
    command: tuple[str, ...] | None = None
    python: str = sys.executable
    cwd: Path | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    lazy: bool = True
    ready_timeout_s: float = 120.0
    ready_interval_s: float = 0.5
    warmup_prompt: Mapping[str, Any] | None = None
    idle_stop_s: float | None = None
    restart_backoff_s: float = 1.0
    max_restarts: int = 5
    restart_window_s: float = 600.0
    stop_grace_s: float = 10.0
    health_interval_s: float | None = 10.0
    health_timeout_s: float = 10.0
    health_failures: int = 3
    port_attempts: int = 3
    port: int | None = None  # a fixed port (COMFY_PORT); None: a free one picked at each start

    def __post_init__(self) -> None:
        if (self.comfy_path is None) == (self.command is None):
            raise InvalidRequest(
                f"backend {self.name!r}: give either a ComfyUI folder (path) or a command, "
                "not both and not neither"
            )
        if self.command is not None and not self.command:
            raise InvalidRequest(f"backend {self.name!r}: command is empty")
        if not self.name or "/" in self.name or self.name in {".", ".."}:
            raise InvalidRequest(f"backend name {self.name!r} is not usable as a file name")
        if self.ready_timeout_s <= 0 or self.ready_interval_s <= 0:
            raise InvalidRequest(f"backend {self.name!r}: ready timeout/interval must be > 0")

    @classmethod
    def from_config(
        cls, table: Mapping[str, Any], *, log_dir: Path, base_dir: Path | None = None
    ) -> ManagedSpec:
        """Build a spec from a `[[backends]]` table (see `CONFIG_KEYS`); relative paths are
        taken from `base_dir` (the config file's folder). Raises InvalidRequest on bad keys."""
        return _spec_from_config(cls, table, log_dir=log_dir, base_dir=base_dir)

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def workdir(self) -> Path:
        """The child's working directory."""
        if self.cwd is not None:
            return self.cwd
        if self.comfy_path is not None:
            return self.comfy_path
        return Path.cwd()

    def base_argv(self) -> list[str]:
        """The command line without the flags comfyrun adds."""
        if self.comfy_path is not None:
            return [self.python, str(self.comfy_path / "main.py"), *self.extra_args]
        assert self.command is not None
        return [*self.command, *self.extra_args]

    def folders(self) -> ComfyFolders:
        """Input/output/temp folders, following ComfyUI's own rules for its flags."""
        return resolve_folders(self)

    def argv(self, port: int) -> list[str]:
        """The full command line for a child listening on `port`."""
        return [*self.base_argv(), *self.folders().flags, "--listen", HOST, "--port", str(port)]

    def problem(self) -> str | None:
        """What is wrong with the installation, as an instruction to fix it; None if nothing."""
        return installation_problem(self)


#: Keys accepted by `ManagedSpec.from_config` (besides `url`, which marks a remote backend).
CONFIG_KEYS = frozenset(
    {
        "name",
        "path",
        "comfy_path",
        "command",
        "python",
        "cwd",
        "args",
        "extra_args",
        "env",
        "lazy",
        "start",
        "ready_timeout_s",
        "ready_interval_s",
        "warmup_prompt",
        "idle_stop_s",
        "idle_stop_minutes",
        "restart_backoff_s",
        "max_restarts",
        "restart_window_s",
        "stop_grace_s",
        "health_interval_s",
        "health_timeout_s",
        "health_failures",
        "port_attempts",
        "port",
        "log_dir",
    }
)


def _spec_from_config(
    cls: type[ManagedSpec],
    table: Mapping[str, Any],
    *,
    log_dir: Path,
    base_dir: Path | None,
) -> ManagedSpec:
    unknown = sorted(set(table) - CONFIG_KEYS)
    name = str(table.get("name") or "")
    where = f"backend {name!r}" if name else "a [[backends]] table"
    if unknown:
        raise InvalidRequest(
            f"{where}: unknown keys {unknown}; known keys: {sorted(CONFIG_KEYS)}",
            details={"unknown": unknown},
        )

    def path(value: Any) -> Path:
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() or base_dir is None else base_dir / p

    def args(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if isinstance(value, Sequence) and all(isinstance(v, str | int | float) for v in value):
            return tuple(str(v) for v in value)
        raise InvalidRequest(f"{where}: expected a string or a list of strings, got {value!r}")

    kwargs: dict[str, Any] = {}
    comfy = table.get("path", table.get("comfy_path"))
    if comfy is not None:
        kwargs["comfy_path"] = path(comfy)
    if "command" in table:
        kwargs["command"] = args(table["command"])
    if not name:
        name = kwargs["comfy_path"].name if "comfy_path" in kwargs else ""
    if not name:
        raise InvalidRequest(f"{where}: a backend with a command needs a name")
    if "python" in table:
        py = str(table["python"])
        kwargs["python"] = str(path(py)) if ("/" in py or os.sep in py) else py
    if "cwd" in table:
        kwargs["cwd"] = path(table["cwd"])
    extra = table.get("args", table.get("extra_args"))
    if extra is not None:
        kwargs["extra_args"] = args(extra)
    if "env" in table:
        env = table["env"]
        if not isinstance(env, Mapping):
            raise InvalidRequest(f"{where}: env must be a table of strings")
        kwargs["env"] = {str(k): str(v) for k, v in env.items()}
    if "start" in table:
        if table["start"] not in ("lazy", "eager"):
            raise InvalidRequest(f"{where}: start must be 'lazy' or 'eager'")
        kwargs["lazy"] = table["start"] == "lazy"
    if "lazy" in table:
        kwargs["lazy"] = bool(table["lazy"])
    if "idle_stop_minutes" in table:
        kwargs["idle_stop_s"] = float(table["idle_stop_minutes"]) * 60
    for key in (
        "ready_timeout_s",
        "ready_interval_s",
        "idle_stop_s",
        "restart_backoff_s",
        "restart_window_s",
        "stop_grace_s",
        "health_interval_s",
        "health_timeout_s",
    ):
        if key in table:
            kwargs[key] = None if table[key] is None else float(table[key])
    for key in ("max_restarts", "health_failures", "port_attempts", "port"):
        if table.get(key) is not None:
            kwargs[key] = int(table[key])
    if "warmup_prompt" in table:
        kwargs["warmup_prompt"] = _load_prompt(table["warmup_prompt"], path, where)
    return cls(
        name=name,
        log_dir=path(table["log_dir"]) if "log_dir" in table else log_dir,
        **kwargs,
    )


def _load_prompt(value: Any, path: Callable[[Any], Path], where: str) -> Mapping[str, Any]:
    import json

    if isinstance(value, Mapping):
        return dict(value)
    try:
        loaded = json.loads(path(value).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{where}: cannot read warmup_prompt {value!r}: {exc}") from None
    if not isinstance(loaded, dict):
        raise InvalidRequest(f"{where}: warmup_prompt must be an API-format prompt object")
    return loaded


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The last value given for `flag` (`--flag v` or `--flag=v`), as argparse would take it."""
    value: str | None = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
    return value


def resolve_folders(spec: ManagedSpec) -> ComfyFolders:
    """ComfyUI's rules: the flags win; --temp-directory X means X/temp; otherwise the folders
    sit in the base directory (--base-directory, or the folder of main.py). With neither,
    comfyrun chooses folders beside the log and passes the flags itself."""
    args = spec.base_argv()
    cwd = spec.workdir

    def absolute(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else cwd / p

    base: Path | None = None
    if (b := _flag_value(args, "--base-directory")) is not None:
        base = absolute(b)
    elif spec.comfy_path is not None:
        base = spec.comfy_path
    else:
        main = next((a for a in args if Path(a).name == "main.py"), None)
        if main is not None:
            base = absolute(main).parent
    fallback = spec.log_dir / spec.name
    flags: list[str] = []
    found: dict[str, Path] = {}
    for kind, flag in _DIR_FLAGS.items():
        given = _flag_value(args, flag)
        if given is not None:
            found[kind] = absolute(given) / "temp" if kind == "temp" else absolute(given)
        elif base is not None:
            found[kind] = base / kind
        else:
            chosen = fallback / kind
            flags += [flag, str(fallback if kind == "temp" else chosen)]
            found[kind] = chosen
    return ComfyFolders(found["input"], found["output"], found["temp"], tuple(flags))


def installation_problem(spec: ManagedSpec) -> str | None:
    """Why this spec cannot start, phrased as what to fix; None when it looks startable."""
    if spec.comfy_path is not None:
        folder = spec.comfy_path
        if not folder.is_dir():
            return (
                f"ComfyUI folder {folder} does not exist: set the backend's path "
                "(--comfy PATH) to your ComfyUI checkout, the folder that contains main.py"
            )
        if not (folder / "main.py").is_file():
            return (
                f"{folder} has no main.py: point the backend's path (--comfy PATH) at the "
                "ComfyUI checkout itself (the folder that contains main.py)"
            )
        if _find_executable(spec.python, spec.workdir) is None:
            return (
                f"Python interpreter {spec.python!r} was not found: set the backend's python to "
                "the interpreter that has ComfyUI's requirements installed "
                f"(for example {folder / 'venv' / 'bin' / 'python'})"
            )
    else:
        assert spec.command is not None
        if _find_executable(spec.command[0], spec.workdir) is None:
            return (
                f"program {spec.command[0]!r} of the backend's command was not found or is not "
                "executable: fix the command"
            )
    if spec.cwd is not None and not spec.cwd.is_dir():
        return f"working directory {spec.cwd} does not exist: fix the backend's cwd"
    return None


def _find_executable(program: str, cwd: Path) -> str | None:
    if os.sep in program or "/" in program:
        p = Path(program)
        p = p if p.is_absolute() else cwd / p
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    return shutil.which(program)


def restart_delay(
    crashes: Sequence[float], now: float, spec: ManagedSpec, rng: random.Random
) -> float | None:
    """Seconds to wait before the next restart, or None when the restart budget is spent.

    `crashes` are the times of crashes so far (the latest included); only those within
    `restart_window_s` of `now` count."""
    recent = sum(1 for t in crashes if t > now - spec.restart_window_s)
    if recent > spec.max_restarts:
        return None
    return backoff_delay(spec.restart_backoff_s, max(1, recent), rng)


# -- process groups -----------------------------------------------------------------------------


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to every process of the group; a group that is gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running (zombies do not count: they hold
    nothing and, when their parent was the child we killed, nobody may ever reap them)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


# -- the supervisor -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A snapshot for `GET /api/v2/backends`, `comfyrun backends` and the metrics."""

    name: str
    state: ProcessState
    url: str | None
    pid: int | None
    restarts: int
    last_error: str | None
    log_file: Path
    log_tail: tuple[str, ...]


class _StartFailed(Exception):
    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.message = message
        self.fatal = fatal


@dataclass(eq=False)
class _Child:
    proc: asyncio.subprocess.Process
    port: int
    log_offset: int
    unresponsive: bool = False
    watcher: asyncio.Task[None] | None = None
    health: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


StateCallback = Callable[[ProcessState], None]


class ManagedProcess:
    """Supervises one ComfyUI child process (see the module docstring)."""

    def __init__(
        self,
        spec: ManagedSpec,
        *,
        port_picker: PortPicker = pick_free_port,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        folders = spec.folders()
        self.input_dir: Path = folders.input_dir
        self.output_dir: Path = folders.output_dir
        self.temp_dir: Path = folders.temp_dir
        self.log = ProcessLog(spec.log_file)
        self.state: ProcessState = ProcessState.STOPPED
        self.last_error: str | None = None
        self.restarts = 0
        self._port_picker = port_picker
        self._rng = rng or random.Random()
        self._child: _Child | None = None
        self._start_task: asyncio.Task[str] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._crashes: list[float] = []
        self._last_failure = ""
        self._callbacks: list[StateCallback] = []
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_task: asyncio.Task[None] | None = None

    # -- what others read ---------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        return self._child.url if self._child is not None and self.state in UP else None

    @property
    def pid(self) -> int | None:
        return self._child.proc.pid if self._child is not None else None

    def log_tail(self, n: int = 20) -> list[str]:
        return self.log.tail(n)

    def info(self, tail: int = 20) -> ProcessInfo:
        return ProcessInfo(
            name=self.name,
            state=self.state,
            url=self.url,
            pid=self.pid,
            restarts=self.restarts,
            last_error=self.last_error,
            log_file=self.log.path,
            log_tail=tuple(self.log_tail(tail)),
        )

    def on_state_change(self, cb: StateCallback) -> None:
        """Call `cb(new_state)` on every change (synchronously, from the event loop)."""
        self._callbacks.append(cb)

    # -- files --------------------------------------------------------------------------------

    def job_input_dir(self, job_id: str) -> Path:
        """A folder inside ComfyUI's input folder for one job's inputs (created)."""
        if not job_id or "/" in job_id or "\\" in job_id or job_id in {".", ".."}:
            raise InvalidRequest(f"job id {job_id!r} cannot name a folder")
        folder = self.input_dir / "comfyrun" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def input_name(self, job_id: str, filename: str) -> str:
        """How a LoadImage-style node names a file written into `job_input_dir(job_id)`."""
        return f"comfyrun/{job_id}/{filename}"

    def remove_job_inputs(self, job_id: str) -> None:
        """Delete what `job_input_dir(job_id)` holds (after the job)."""
        folder = self.input_dir / "comfyrun" / job_id
        if folder.parent == self.input_dir / "comfyrun":
            shutil.rmtree(folder, ignore_errors=True)

    # -- activity -----------------------------------------------------------------------------

    def mark_busy(self, busy: bool) -> None:
        """The pool says whether the backend has work; this drives ready ⇄ busy and idle stop."""
        if self.state not in UP:
            return
        self._set_state(ProcessState.BUSY if busy else ProcessState.READY)
        self.note_activity()

    def note_activity(self) -> None:
        """Restart the idle-stop clock."""
        self._arm_idle_timer()

    # -- lifecycle ----------------------------------------------------------------------------

    async def ensure_started(self) -> str:
        """The base URL of a ready ComfyUI, starting it if needed (lazy start).

        Raises BackendError, with what to fix and the log's last lines, if it cannot start."""
        while True:
            if self._stop_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._stop_task)
                continue
            if self.state in UP and self._child is not None:
                self.note_activity()
                return self._child.url
            if self.state is ProcessState.ERROR:
                raise self._error()
            task = self._start_task or self._begin_start(after_crash=False)
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if task.cancelled() and not (current and current.cancelling()):
                    raise BackendError(
                        f"backend {self.name!r} was stopped while it was starting",
                        details={"backend": self.name},
                    ) from None
                raise

    def start_in_background(self) -> None:
        """Begin starting now without waiting (eager start); failures land in `error`."""
        if self._start_task is None and self.state is ProcessState.STOPPED:
            self._begin_start(after_crash=False)

    async def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period; returns when none of
        the group is left. A later `ensure_started()` starts it again."""
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(self._run_stop())
        task = self._stop_task
        await asyncio.shield(task)

    async def restart(self) -> None:
        """Stop, forget past crashes and errors, and start again."""
        await self.stop()
        self._crashes.clear()
        await self.ensure_started()

    def kill_now(self) -> None:
        """SIGKILL the whole group at once, without waiting (last resort, e.g. at exit)."""
        if self._child is not None:
            signal_group(self._child.proc.pid, signal.SIGKILL)

    # -- internals ----------------------------------------------------------------------------

    def _set_state(self, state: ProcessState) -> None:
        old = self.state
        if old is state:
            return
        if (old, state) not in TRANSITIONS:
            logger.error(
                "backend %s: unexpected state change %s -> %s",
                self.name,
                old,
                state,
                extra={"action": "backend_state_bug", "backend": self.name},
            )
        self.state = state
        logger.info(
            "backend %s: %s -> %s",
            self.name,
            old,
            state,
            extra={"action": "backend_state", "backend": self.name, "state": state.value},
        )
        if state is not ProcessState.READY:
            self._cancel_idle_timer()
        for cb in list(self._callbacks):
            try:
                cb(state)
            except Exception:
                logger.exception("backend %s: state callback failed", self.name)

    def _error(self) -> BackendError:
        return BackendError(
            self.last_error or f"backend {self.name!r} failed",
            details={
                "backend": self.name,
                "state": self.state.value,
                "log_file": str(self.log.path),
                "log_tail": self.log_tail(_LOG_LINES_IN_ERRORS),
            },
        )

    def _with_tail(self, message: str) -> str:
        tail = self.log_tail(_LOG_LINES_IN_ERRORS)
        if not tail:
            return message
        return f"{message}\nlast lines of {self.log.path}:\n" + "\n".join(tail)

    def _begin_start(self, *, after_crash: bool) -> asyncio.Task[str]:
        task = asyncio.get_running_loop().create_task(self._run_start(after_crash=after_crash))
        self._start_task = task

        def done(t: asyncio.Task[str]) -> None:
            if self._start_task is t:
                self._start_task = None
            if not t.cancelled():
                t.exception()  # retrieved: its awaiters (if any) got it already

        task.add_done_callback(done)
        return task

    async def _run_start(self, *, after_crash: bool) -> str:
        loop = asyncio.get_running_loop()
        while True:
            if after_crash:
                delay = restart_delay(self._crashes, loop.time(), self.spec, self._rng)
                if delay is None:
                    self.last_error = self._with_tail(
                        f"backend {self.name!r} crashed {len(self._crashes)} times within "
                        f"{self.spec.restart_window_s:.0f}s and was given up; "
                        f"last failure: {self._last_failure}; fix it and restart the backend"
                    )
                    self._set_state(ProcessState.ERROR)
                    raise self._error()
                self._set_state(ProcessState.RESTARTING)
                logger.warning(
                    "backend %s: restarting in %.1fs",
                    self.name,
                    delay,
                    extra={"action": "backend_restart", "backend": self.name},
                )
                await asyncio.sleep(delay)
                self.restarts += 1
            self._set_state(ProcessState.STARTING)
            try:
                return await self._launch()
            except _StartFailed as failure:
                if failure.fatal or not after_crash:
                    self.last_error = failure.message
                    self._set_state(ProcessState.ERROR)
                    logger.error(
                        "backend %s: %s",
                        self.name,
                        failure.message,
                        extra={"action": "backend_error", "backend": self.name},
                    )
                    raise self._error() from None
                self._crashes.append(loop.time())
                self._last_failure = failure.message.split("\n", 1)[0]
                self.last_error = failure.message
                self._set_state(ProcessState.CRASHED)

    async def _launch(self) -> str:
        problem = self.spec.problem()
        if problem is not None:
            self.log.note(f"not started: {problem}")
            raise _StartFailed(problem, fatal=True)
        for folder in (self.input_dir, self.output_dir):
            folder.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self.spec.port is not None else max(1, self.spec.port_attempts)
        for _ in range(attempts):
            port = self.spec.port if self.spec.port is not None else self._port_picker()
            child = await self._spawn(port)
            try:
                failure = await self._wait_ready(child)
                if failure is None and self.spec.warmup_prompt is not None:
                    failure = await self._warm_up(child)
                    if failure is not None:
                        await self._terminate(child, self.spec.stop_grace_s)
                        raise _StartFailed(self._with_tail(failure), fatal=True)
            except BaseException:
                await asyncio.shield(self._terminate(child, 0))
                raise
            if failure is None:
                self._adopt(child)
                return child.url
            await self._terminate(child, self.spec.stop_grace_s)
            output = self.log.read_from(child.log_offset)
            if child.proc.returncode not in (None, -signal.SIGTERM, -signal.SIGKILL) and (
                says_port_in_use(output)
            ):
                logger.warning(
                    "backend %s: port %d was taken, trying another",
                    self.name,
                    port,
                    extra={"action": "backend_port_taken", "backend": self.name},
                )
                continue
            raise _StartFailed(self._with_tail(failure), fatal=False)
        raise _StartFailed(
            f"backend {self.name!r} could not bind a free port in {self.spec.port_attempts} "
            "attempts; something keeps taking the ports comfyrun picks",
            fatal=False,
        )

    async def _spawn(self, port: int) -> _Child:
        argv = self.spec.argv(port)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env}
        with self.log.open_for_child() as out:
            offset = out.tell()
            out.write(f"[comfyrun] starting: {shlex.join(argv)}\n".encode())
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=self.spec.workdir,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise _StartFailed(
                    f"backend {self.name!r} could not run {argv[0]!r}: {exc}; fix the "
                    "backend's python/command",
                    fatal=True,
                ) from None
        logger.info(
            "backend %s: started pid %d on port %d",
            self.name,
            proc.pid,
            port,
            extra={"action": "backend_spawn", "backend": self.name, "pid": proc.pid},
        )
        return _Child(proc=proc, port=port, log_offset=offset)

    async def _probe(self, http: httpx.AsyncClient, url: str) -> bool:
        try:
            response = await http.get(f"{url}/system_stats")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _wait_ready(self, child: _Child) -> str | None:
        """None once the child answers; else why not (it exited, or the time ran out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spec.ready_timeout_s
        exited = loop.create_task(child.proc.wait())
        timeout = httpx.Timeout(min(self.spec.health_timeout_s, self.spec.ready_timeout_s))
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
                while True:
                    probe = loop.create_task(self._probe(http, child.url))
                    remaining = max(0.0, deadline - loop.time())
                    await asyncio.wait(
                        {probe, exited}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                    if probe.done() and probe.result() and not exited.done():
                        return None
                    if not probe.done():
                        probe.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await probe
                    if exited.done():
                        return (
                            f"backend {self.name!r}: ComfyUI exited with code "
                            f"{exited.result()} during start-up, before it answered on "
                            f"{child.url}; fix the error shown in its log"
                        )
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return (
                            f"backend {self.name!r}: ComfyUI did not answer GET /system_stats "
                            f"on {child.url} within {self.spec.ready_timeout_s:g}s; raise "
                            "ready_timeout_s if it loads slowly, or check its log"
                        )
                    await asyncio.wait({exited}, timeout=min(self.spec.ready_interval_s, remaining))
        finally:
            if not exited.done():
                exited.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await exited

    async def _warm_up(self, child: _Child) -> str | None:
        """Run the warm-up prompt; None when it completed, else why it failed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spec.ready_timeout_s
        body = {"prompt": dict(self.spec.warmup_prompt or {}), "client_id": "comfyrun-warmup"}
        timeout = httpx.Timeout(self.spec.health_timeout_s)
        async with httpx.AsyncClient(base_url=child.url, timeout=timeout, trust_env=False) as http:
            try:
                response = await http.post("/prompt", json=body)
                if response.status_code != 200:
                    return (
                        f"backend {self.name!r}: the warm-up prompt was rejected: {response.text}"
                    )
                prompt_id = str(response.json()["prompt_id"])
                # ComfyUI offers no completion event over plain HTTP; a bounded poll of the
                # history is enough for a one-off at start-up.
                while loop.time() < deadline:
                    if child.proc.returncode is not None:
                        return f"backend {self.name!r}: ComfyUI exited during the warm-up prompt"
                    entry = (await http.get(f"/history/{prompt_id}")).json().get(prompt_id)
                    if entry:
                        status = entry.get("status") or {}
                        if status.get("status_str") == "error":
                            return (
                                f"backend {self.name!r}: the warm-up prompt failed: "
                                f"{status.get('messages')}"
                            )
                        if status.get("completed", True):
                            return None
                    await asyncio.sleep(self.spec.ready_interval_s)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                return f"backend {self.name!r}: the warm-up prompt failed: {exc!r}"
        return (
            f"backend {self.name!r}: the warm-up prompt did not finish within "
            f"{self.spec.ready_timeout_s:g}s"
        )

    def _adopt(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        self._child = child
        self.last_error = None
        child.watcher = loop.create_task(self._watch(child))
        if self.spec.health_interval_s:
            child.health = loop.create_task(self._watch_health(child))
        self._set_state(ProcessState.READY)
        self.note_activity()

    async def _watch(self, child: _Child) -> None:
        code = await child.proc.wait()
        if self._child is not child:
            return  # stopped on purpose
        self._child = None
        signal_group(child.proc.pid, signal.SIGKILL)  # whatever it left behind
        await self._cancel(child.health)
        reason = (
            f"stopped answering ({self.spec.health_failures} health probes failed) and was killed"
            if child.unresponsive
            else f"exited unexpectedly with code {code}"
        )
        self.log.note(reason)
        self._crashes.append(asyncio.get_running_loop().time())
        self._last_failure = reason
        self.last_error = self._with_tail(f"backend {self.name!r}: ComfyUI {reason}")
        logger.warning(
            "backend %s: ComfyUI %s",
            self.name,
            reason,
            extra={"action": "backend_crash", "backend": self.name},
        )
        self._set_state(ProcessState.CRASHED)
        if self._child is None and self._start_task is None and self._stop_task is None:
            self._begin_start(after_crash=True)

    async def _watch_health(self, child: _Child) -> None:
        assert self.spec.health_interval_s
        failures = 0
        timeout = httpx.Timeout(self.spec.health_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            while failures < self.spec.health_failures:
                await asyncio.sleep(self.spec.health_interval_s)
                failures = 0 if await self._probe(http, child.url) else failures + 1
        if self._child is child:
            child.unresponsive = True
            await self._terminate(child, min(self.spec.stop_grace_s, 5.0))

    async def _terminate(self, child: _Child, grace: float) -> None:
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

    async def _run_stop(self) -> None:
        try:
            self._cancel_idle_timer()
            await self._cancel(self._start_task)
            child, self._child = self._child, None
            if child is not None:
                await self._cancel(child.watcher)
                await self._cancel(child.health)
                self.log.note("stopping")
                await self._terminate(child, self.spec.stop_grace_s)
                self.log.note(f"stopped (exit code {child.proc.returncode})")
            self._set_state(ProcessState.STOPPED)
        finally:
            self._stop_task = None

    async def _cancel(self, task: asyncio.Task[Any] | None) -> None:
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    # -- idle stop ----------------------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        if self.spec.idle_stop_s is None or self.state is not ProcessState.READY:
            return
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self.spec.idle_stop_s, self._idle_expired)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self.state is ProcessState.READY and self._stop_task is None:
            logger.info(
                "backend %s: idle for %gs, stopping it",
                self.name,
                self.spec.idle_stop_s,
                extra={"action": "backend_idle_stop", "backend": self.name},
            )
            self._idle_task = asyncio.get_running_loop().create_task(self.stop())


__all__ = [
    "CONFIG_KEYS",
    "TRANSITIONS",
    "UP",
    "ComfyFolders",
    "ManagedProcess",
    "ManagedSpec",
    "ProcessInfo",
    "ProcessState",
    "group_alive",
    "installation_problem",
    "resolve_folders",
    "restart_delay",
    "signal_group",
]
