"""A ComfyUI stand-in for tests, demos and client development without a GPU.

from comfyrun.comfy.emulator import EmulatorConfig, start_emulator

async with start_emulator(EmulatorConfig(output_dir=..., input_dir=..., temp_dir=...)) as emu:
    emu.url      # "http://127.0.0.1:PORT"
    emu.faults   # mutable fault settings (see comfyrun.comfy.emulator.faults)
"""

from comfyrun.comfy.emulator.config import DEFAULT_MODELS, EmulatorConfig
from comfyrun.comfy.emulator.faults import Faults, NodeFault
from comfyrun.comfy.emulator.server import Emulator, start_emulator

__all__ = ["DEFAULT_MODELS", "Emulator", "EmulatorConfig", "Faults", "NodeFault", "start_emulator"]
