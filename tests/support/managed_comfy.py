"""ComfyUI-shaped folders whose main.py runs comfyrun's emulator, for managed-process tests.

A thin wrapper over the emulator's own `comfyrun emulator --make-comfy-folder`, so the process
manager runs it exactly as it runs a real ComfyUI checkout (`<python> main.py --listen ...
--port ...`). Emulator settings travel as ComfyUI-style extra arguments: `emulator_args(...)`.
"""

from __future__ import annotations

from pathlib import Path

from comfyrun.comfy.emulator.folder import make_comfy_folder


def make_emulator_folder(folder: Path) -> Path:
    """A folder shaped like a ComfyUI checkout (main.py, models/, input/, output/, temp/)."""
    return make_comfy_folder(folder)


def emulator_args(step_time_s: float = 0.0, faults: tuple[str, ...] = ()) -> list[str]:
    """Extra arguments for the emulator's main.py: KSampler time per step and --fault specs."""
    args = ["--step-time", str(step_time_s)]
    for fault in faults:
        args += ["--fault", fault]
    return args


__all__ = ["emulator_args", "make_emulator_folder"]
