"""How to run one managed ComfyUI: the spec, its command line, folders and config table.

Pure functions of the spec, except `installation_problem`, which looks at the file system.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyrun.backends.process.interpreter import Discovery, discover
from comfyrun.errors import InvalidRequest

#: Managed backends listen on the loopback interface only.
HOST = "127.0.0.1"


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
    the last value), and `--input-directory`/`--output-directory`/`--temp-directory` for each
    folder the arguments do not name: under `files_dir` when given (so that several processes on
    one ComfyUI folder never share an output folder), else where ComfyUI itself would put them.

    name               the backend's name (also its log file: `<log_dir>/<name>.log`)
    log_dir            where the log file goes
    files_dir          this backend's own input/, output/ and temp/ (None: ComfyUI's defaults)
    comfy_path         a ComfyUI checkout: runs `<python> <comfy_path>/main.py`
    command            or a full command line that accepts ComfyUI's flags
    python             the interpreter for main.py (None: discovered, see `interpreter.py`)
    cwd                working directory (default: the folder, or comfyrun's own for a command)
    extra_args         more flags, e.g. ("--extra-model-paths-config", "extra.yaml")
    env                extra environment, e.g. {"CUDA_VISIBLE_DEVICES": "1"}
    lazy               start on the first job (True) or with the server (False)
    ready_timeout_s    how long start-up (and the warm-up prompt) may take
    ready_interval_s   delay between readiness probes (GET /system_stats)
    warmup_prompt      an API-format prompt to run before the backend counts as ready
    idle_stop_s        stop after this long without work (None: never)
    restart_backoff_s  base of the jittered exponential delay before a restart
    max_restarts       restarts allowed within restart_window_s before the backend is `error`
    stop_grace_s       SIGTERM → SIGKILL delay on stop
    health_interval_s  while up, probe this often (None: no probes; the pool may probe too)
    health_timeout_s   one probe's timeout; `health_failures` failures in a row = a crash
    port_attempts      starts tried on fresh ports when the chosen port was taken meanwhile
    die_with_parent    Linux: the kernel kills ComfyUI if comfyrun dies (PR_SET_PDEATHSIG)
    port               a fixed port (legacy COMFY_PORT) instead of a free one per start
    """

    name: str
    log_dir: Path
    files_dir: Path | None = None
    comfy_path: Path | None = None
    command: tuple[str, ...] | None = None
    python: str | None = None
    cwd: Path | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    lazy: bool = True
    ready_timeout_s: float = 120.0
    ready_interval_s: float = 0.5
    warmup_prompt: Mapping[str, Any] | None = field(default=None, hash=False)
    idle_stop_s: float | None = None
    restart_backoff_s: float = 1.0
    max_restarts: int = 5
    restart_window_s: float = 600.0
    stop_grace_s: float = 10.0
    health_interval_s: float | None = 10.0
    health_timeout_s: float = 10.0
    health_failures: int = 3
    port_attempts: int = 3
    die_with_parent: bool = True
    port: int | None = None

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

    @functools.cached_property
    def discovery(self) -> Discovery:
        """How the interpreter was chosen (looks at files and may run candidates: call it off
        the event loop the first time; the answer is kept)."""
        if self.comfy_path is None:
            return Discovery(self.python or sys.executable, "command", ())
        return discover(self.comfy_path, self.python)

    @property
    def interpreter(self) -> str:
        """The Python that runs main.py: `python` if given, else the one discovered (the
        folder's venv/.venv, else a python3/python on PATH or comfyrun's own that can import
        torch). When none was found, `problem()` says so before any start."""
        if self.python is not None:
            return self.python
        return self.discovery.found or "python3"

    def base_argv(self) -> list[str]:
        """The command line without the flags comfyrun adds."""
        if self.comfy_path is not None:
            return [self.interpreter, str(self.comfy_path / "main.py"), *self.extra_args]
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
        "die_with_parent",
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
    if "die_with_parent" in table:
        kwargs["die_with_parent"] = bool(table["die_with_parent"])
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
    if isinstance(value, Mapping):
        return dict(value)
    return load_prompt_file(path(value), where)


def load_prompt_file(file: Path, where: str = "warmup_prompt") -> dict[str, Any]:
    """An API-format prompt read from a JSON file; InvalidRequest says what is wrong."""
    try:
        loaded = json.loads(Path(file).expanduser().read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{where}: cannot read warmup_prompt {str(file)!r}: {exc}") from None
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
    """ComfyUI's rules: the flags win; --temp-directory X means X/temp; --base-directory moves
    the folders it does not name. A folder left unnamed goes under `spec.files_dir` when set,
    else beside main.py (the folder of the checkout); with neither, comfyrun chooses one beside
    the log. comfyrun passes the flags itself for every folder it chose."""
    args = spec.base_argv()
    cwd = spec.workdir

    def absolute(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else cwd / p

    base: Path | None = None
    chosen_root: Path | None = None
    if (b := _flag_value(args, "--base-directory")) is not None:
        base = absolute(b)
    elif spec.files_dir is not None:
        chosen_root = spec.files_dir
    elif spec.comfy_path is not None:
        base = spec.comfy_path
    else:
        main = next((a for a in args if Path(a).name == "main.py"), None)
        if main is not None:
            base = absolute(main).parent
    if base is None and chosen_root is None:
        chosen_root = spec.log_dir / spec.name
    flags: list[str] = []
    found: dict[str, Path] = {}
    for kind, flag in _DIR_FLAGS.items():
        given = _flag_value(args, flag)
        if given is not None:
            found[kind] = absolute(given) / "temp" if kind == "temp" else absolute(given)
        elif base is not None:
            found[kind] = base / kind
        else:
            assert chosen_root is not None
            chosen = chosen_root / kind
            flags += [flag, str(chosen_root if kind == "temp" else chosen)]
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
        discovery_problem = spec.discovery.problem(spec.name)
        if discovery_problem is not None:
            return discovery_problem
        if _find_executable(spec.interpreter, spec.workdir) is None:
            return (
                f"Python interpreter {spec.interpreter!r} was not found: set the backend's python to "
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


__all__ = [
    "CONFIG_KEYS",
    "HOST",
    "ComfyFolders",
    "ManagedSpec",
    "installation_problem",
    "load_prompt_file",
    "resolve_folders",
]
