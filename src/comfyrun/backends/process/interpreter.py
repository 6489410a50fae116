"""Which Python runs a managed ComfyUI's main.py.

ComfyUI's own requirements (torch first of all) live in whatever environment the user installed
them into, rarely comfyrun's. The order, first match wins:

1. the backend's `python` setting (also `--comfy-python` and `COMFY_PYTHON`), taken as given;
2. a virtual environment inside the ComfyUI folder: `venv/` or `.venv/`;
3. each `python3`, then each `python`, on PATH, if it can import torch;
4. the Python running comfyrun, if it can import torch.

When nothing matches, `Discovery.found` is None and `Discovery.problem()` says what was tried
and how to choose one, before anything is started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Probe run as `<python> -c PROBE`: exits 0 when torch is importable (found, not imported:
#: importing torch takes seconds).
PROBE = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"

_VENV_PYTHONS = (
    Path("venv/bin/python"),
    Path(".venv/bin/python"),
    Path("venv/Scripts/python.exe"),
    Path(".venv/Scripts/python.exe"),
)
_PATH_NAMES = ("python3", "python")

TorchProbe = Callable[[str], bool]


def can_import_torch(python: str) -> bool:
    """Whether `python` runs and finds the torch package (a 30 s bounded subprocess)."""
    try:
        done = subprocess.run(
            [python, "-c", PROBE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@dataclass(frozen=True, slots=True)
class Discovery:
    """The interpreter chosen (`found`, None if none) and every candidate looked at."""

    found: str | None
    source: str
    tried: tuple[str, ...]

    def problem(self, backend: str) -> str | None:
        """What to do when nothing was found; None when an interpreter was."""
        if self.found is not None:
            return None
        return (
            f"backend {backend!r}: no Python for ComfyUI was found; tried "
            + "; ".join(self.tried)
            + '. Set the backend\'s python (config `python = "/path/to/python"`, '
            "`comfyrun serve --comfy-python PATH` or COMFY_PYTHON) to the interpreter that has "
            "ComfyUI's requirements installed"
        )


def discover(
    comfy_path: Path,
    python: str | None = None,
    *,
    search_path: str | None = None,
    own_python: str = sys.executable,
    probe: TorchProbe = can_import_torch,
) -> Discovery:
    """Find the Python for the ComfyUI checkout at `comfy_path` (see the module docstring).

    `search_path` replaces PATH for step 3 (None: the process's PATH)."""
    if python is not None:
        return Discovery(python, "setting", (f"the python setting {python!r}",))
    tried: list[str] = []
    for relative in _VENV_PYTHONS:
        candidate = comfy_path / relative
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return Discovery(str(candidate), "venv", (*tried, str(candidate)))
    tried.append(f"no venv/ or .venv/ in {comfy_path}")
    seen: set[str] = set()
    for on_path in _on_path(_PATH_NAMES, search_path):
        if on_path in seen:
            continue
        seen.add(on_path)
        if probe(on_path):
            return Discovery(on_path, "PATH", (*tried, on_path))
        tried.append(f"{on_path} (cannot import torch)")
    if not seen:
        tried.append("no python3 or python on PATH")
    if own_python and own_python not in seen:
        if probe(own_python):
            return Discovery(own_python, "comfyrun", (*tried, own_python))
        tried.append(f"comfyrun's own {own_python} (cannot import torch)")
    return Discovery(None, "", tuple(tried))


def _on_path(names: Sequence[str], search_path: str | None) -> list[str]:
    """Every executable `name` on PATH, all `python3`s before all `python`s."""
    dirs = (os.environ.get("PATH", os.defpath) if search_path is None else search_path).split(
        os.pathsep
    )
    found = []
    for name in names:
        for folder in dirs:
            where = shutil.which(name, path=folder) if folder else None
            if where is not None:
                found.append(where)
    return found


__all__ = ["PROBE", "Discovery", "TorchProbe", "can_import_torch", "discover"]
