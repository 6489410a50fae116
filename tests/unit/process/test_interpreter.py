"""Interpreter discovery for a managed ComfyUI folder: each branch in order, and the error.

Candidates are tiny shell scripts; the torch probe really runs them (`-c PROBE`): one that
exits 0 "has torch", one that exits 1 has not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyrun.backends.process import ManagedSpec
from comfyrun.backends.process.interpreter import can_import_torch, discover


def script(path: Path, *, has_torch: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexit {0 if has_torch else 1}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def comfy(tmp_path: Path) -> Path:
    folder = tmp_path / "ComfyUI"
    folder.mkdir()
    (folder / "main.py").write_text("")
    return folder


def test_the_python_setting_wins_over_everything(comfy: Path, tmp_path: Path) -> None:
    script(comfy / "venv" / "bin" / "python", has_torch=True)
    found = discover(comfy, "/opt/conda/envs/comfy/bin/python", search_path=str(tmp_path))
    assert (found.found, found.source) == ("/opt/conda/envs/comfy/bin/python", "setting")


@pytest.mark.parametrize("venv", ["venv", ".venv"])
def test_the_folders_own_venv_comes_next(comfy: Path, tmp_path: Path, venv: str) -> None:
    python = script(comfy / venv / "bin" / "python", has_torch=False)  # taken without a probe
    bin_dir = tmp_path / "bin"
    script(bin_dir / "python3", has_torch=True)
    found = discover(comfy, search_path=str(bin_dir))
    assert (found.found, found.source) == (str(python), "venv")


def test_then_a_python_on_path_that_can_import_torch(comfy: Path, tmp_path: Path) -> None:
    without, with_torch = tmp_path / "a", tmp_path / "b"
    script(without / "python3", has_torch=False)
    script(with_torch / "python3", has_torch=True)
    found = discover(comfy, search_path=f"{without}:{with_torch}", own_python="")
    assert (found.found, found.source) == (str(with_torch / "python3"), "PATH")
    assert found.tried[-2] == f"{without / 'python3'} (cannot import torch)"


def test_python_is_tried_after_python3(comfy: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    script(bin_dir / "python3", has_torch=False)
    python = script(bin_dir / "python", has_torch=True)
    found = discover(comfy, search_path=str(bin_dir), own_python="")
    assert (found.found, found.source) == (str(python), "PATH")
    assert f"{bin_dir / 'python3'} (cannot import torch)" in found.tried


def test_then_comfyruns_own_python_if_it_has_torch(comfy: Path, tmp_path: Path) -> None:
    own = script(tmp_path / "own" / "python", has_torch=True)
    found = discover(comfy, search_path=str(tmp_path / "empty"), own_python=str(own))
    assert (found.found, found.source) == (str(own), "comfyrun")


def test_nothing_found_is_a_clear_error_that_says_what_was_tried(
    comfy: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    script(bin_dir / "python3", has_torch=False)
    own = script(tmp_path / "own" / "python", has_torch=False)
    found = discover(comfy, search_path=str(bin_dir), own_python=str(own))
    assert found.found is None
    message = found.problem("gpu0")
    assert message is not None
    assert f"no venv/ or .venv/ in {comfy}" in message
    assert f"{bin_dir / 'python3'} (cannot import torch)" in message
    assert f"{own} (cannot import torch)" in message
    assert "--comfy-python" in message and "COMFY_PYTHON" in message


def test_the_spec_reports_it_before_starting(comfy: Path, tmp_path: Path) -> None:
    spec = ManagedSpec(name="gpu0", log_dir=tmp_path, comfy_path=comfy)
    # nothing in this folder; whatever this machine's PATH holds, a venv makes it deterministic
    assert spec.discovery.source != "venv"
    if spec.discovery.found is None:
        problem = spec.problem()
        assert problem is not None and "no Python for ComfyUI was found" in problem
    venv = script(comfy / ".venv" / "bin" / "python", has_torch=False)
    fresh = ManagedSpec(name="gpu0", log_dir=tmp_path, comfy_path=comfy)
    assert fresh.interpreter == str(venv) and fresh.problem() is None


def test_the_probe_runs_the_candidate(tmp_path: Path) -> None:
    assert can_import_torch(str(script(tmp_path / "yes", has_torch=True)))
    assert not can_import_torch(str(script(tmp_path / "no", has_torch=False)))
    assert not can_import_torch(str(tmp_path / "missing"))
