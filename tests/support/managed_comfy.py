"""ComfyUI-shaped folders whose main.py runs comfyrun's emulator, for managed-process tests.

`make_emulator_folder(path)` writes main.py (ComfyUI's flags: --listen, --port,
--input-directory, --output-directory, --temp-directory with ComfyUI's "<dir>/temp" rule,
--fault, --step-time), input/, output/ and models/. It runs the emulator with the interpreter that
runs it, so run it with this checkout's Python (the default of ManagedSpec.python).
"""

from __future__ import annotations

from pathlib import Path

MAIN_PY = '''"""ComfyUI stand-in: comfyrun's emulator behind ComfyUI's command line (written by a test)."""
import argparse
import asyncio
import os
import signal

from comfyrun.comfy.emulator import EmulatorConfig, start_emulator

BASE = os.path.dirname(os.path.abspath(__file__))


async def serve(cfg: EmulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with start_emulator(cfg) as emu:
        print(f"To see the GUI go to: {emu.url}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--input-directory", default=os.path.join(BASE, "input"))
    parser.add_argument("--output-directory", default=os.path.join(BASE, "output"))
    parser.add_argument("--temp-directory", default=None)
    parser.add_argument("--step-time", type=float, default=float(os.environ.get("EMU_STEP_TIME", "0")))
    parser.add_argument("--fault", action="append", default=[])
    args, _ = parser.parse_known_args()
    temp = os.path.join(args.temp_directory, "temp") if args.temp_directory else os.path.join(BASE, "temp")
    cfg = EmulatorConfig(
        host=args.listen,
        port=args.port,
        input_dir=args.input_directory,
        output_dir=args.output_directory,
        temp_dir=temp,
        step_time_s=args.step_time,
    )
    for spec in args.fault + [f for f in os.environ.get("EMU_FAULTS", "").split(",") if f]:
        cfg.faults.apply_spec(spec)
    print("Starting server", flush=True)
    asyncio.run(serve(cfg))


if __name__ == "__main__":
    main()
'''


def make_emulator_folder(folder: Path) -> Path:
    """A folder shaped like a ComfyUI checkout whose main.py runs the emulator."""
    for sub in ("input", "output", "models/checkpoints"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(MAIN_PY)
    return folder


__all__ = ["MAIN_PY", "make_emulator_folder"]
