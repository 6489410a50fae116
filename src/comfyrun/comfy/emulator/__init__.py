"""A ComfyUI stand-in for tests, demos and client development without a GPU.

It speaks ComfyUI 0.3.64's protocol as captured in ../shared/comfy-protocol: the same routes
(also under /api/), JSON shapes, status codes, validation errors, websocket messages and their
order, history records and file naming. Image nodes compute real pixels; the model nodes of the
default text-to-image graph are simulated (see `nodes.model`).

    from comfyrun.comfy.emulator import EmulatorConfig, start_emulator

    cfg = EmulatorConfig(output_dir=..., input_dir=..., temp_dir=..., step_time_s=0.0)
    async with start_emulator(cfg) as emu:   # port=0 binds a free port
        emu.url      # "http://127.0.0.1:PORT"
        emu.faults   # mutable fault settings (see `faults`), also POST /emulator/faults

Modules: `server` (app, worker thread, start_emulator), `routes` (HTTP table), `hub`
(websockets), `promptqueue` (queue and history), `validation` (POST /prompt checks), `graph`
(execution order, cache keys), `executor` (runs a prompt, sends its messages), `nodes`
(implementations), `files` (upload and /view), `metadata` (/view_metadata), `objectinfo`
(node definitions), `faults`, `config`, `cli` (ComfyUI's main.py flags), `folder`
(--make-comfy-folder).
"""

from comfyrun.comfy.emulator.config import DEFAULT_MODELS, EmulatorConfig
from comfyrun.comfy.emulator.faults import Faults, NodeFault
from comfyrun.comfy.emulator.server import Emulator, start_emulator

__all__ = ["DEFAULT_MODELS", "Emulator", "EmulatorConfig", "Faults", "NodeFault", "start_emulator"]
