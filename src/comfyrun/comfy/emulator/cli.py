"""Command line of the emulator, a drop-in for ComfyUI's `main.py`.

`python -m comfyrun.comfy.emulator` and `comfyrun emulator` both end here. ComfyUI's flags are
accepted (the GPU and custom-node ones are accepted and ignored); the emulator's own flags are
--step-time, --models-dir, --model FOLDER=NAME, --fault SPEC, --load-s-per-gb,
--load-s-per-file, --unload-s and --make-comfy-folder PATH. --extra-model-paths-config is
honoured as ComfyUI does (see `modelpaths.py`), and so is --disable-smart-memory (every model
unloaded at the end of each prompt, `--unload-s` seconds each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from comfyrun.comfy.emulator.config import DEFAULT_MODELS, PREVIEW_METHODS, EmulatorConfig
from comfyrun.comfy.emulator.faults import Faults
from comfyrun.comfy.emulator.folder import make_comfy_folder
from comfyrun.comfy.emulator.modelpaths import ExtraPaths
from comfyrun.comfy.emulator.server import COMFYUI_VERSION, start_emulator

log = logging.getLogger(__name__)

_IGNORED_SWITCHES = (
    "--cpu",
    "--disable-auto-launch",
    "--auto-launch",
    "--disable-all-custom-nodes",
    "--disable-metadata",
    "--dont-print-server",
    "--lowvram",
    "--highvram",
    "--normalvram",
    "--novram",
    "--gpu-only",
    "--force-fp16",
    "--fp16-vae",
    "--bf16-vae",
    "--cache-classic",
    "--cache-none",
    "--disable-xformers",
    "--use-split-cross-attention",
    "--use-pytorch-cross-attention",
    "--multi-user",
    "--verbose-quiet",
)
_IGNORED_VALUES = (
    "--cuda-device",
    "--front-end-version",
    "--front-end-root",
    "--user-directory",
    "--cache-lru",
    "--reserve-vram",
    "--max-upload-size",
)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0 to 65535)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfyrun emulator",
        description="A ComfyUI stand-in: same HTTP/websocket protocol, simulated models, no GPU.",
    )
    parser.add_argument("--listen", nargs="?", const="0.0.0.0", default="127.0.0.1", metavar="IP")
    parser.add_argument("--port", type=_port, default=8188)
    parser.add_argument("--base-directory", type=Path, default=None)
    parser.add_argument("--output-directory", type=Path, default=None)
    parser.add_argument("--input-directory", type=Path, default=None)
    parser.add_argument("--temp-directory", type=Path, default=None)
    parser.add_argument(
        "--extra-model-paths-config", type=Path, nargs="+", action="append", metavar="PATH"
    )
    parser.add_argument("--preview-method", choices=PREVIEW_METHODS, default="none")
    parser.add_argument("--verbose", nargs="?", const="DEBUG", default="INFO")
    for switch in _IGNORED_SWITCHES:
        parser.add_argument(switch, action="store_true", help=argparse.SUPPRESS)
    for option in _IGNORED_VALUES:
        parser.add_argument(option, action="append", help=argparse.SUPPRESS)
    parser.add_argument("--step-time", type=float, default=0.05, help="seconds per KSampler step")
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="a ComfyUI-shaped models folder"
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="FOLDER=NAME",
        help="list a model file (repeatable), e.g. checkpoints=sd_xl_base_1.0.safetensors",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="SPEC", help="inject a fault (repeatable)"
    )
    parser.add_argument(
        "--load-s-per-gb",
        type=float,
        default=0.0,
        help="simulated seconds to load a model that is not in memory, per GB of its file",
    )
    parser.add_argument(
        "--load-s-per-file",
        type=float,
        default=0.0,
        help="simulated seconds to load a model that is not in memory, per file",
    )
    parser.add_argument(
        "--loaded-models", type=int, default=1, help="models kept in memory (most recent)"
    )
    parser.add_argument(
        "--disable-smart-memory",
        action="store_true",
        help="unload every model at the end of each prompt, as ComfyUI does with this flag",
    )
    parser.add_argument(
        "--unload-s",
        type=float,
        default=0.0,
        help="simulated seconds to unload a model (--disable-smart-memory), per model loaded",
    )
    parser.add_argument("--make-comfy-folder", type=Path, default=None, metavar="PATH")
    return parser


def config_from_args(args: argparse.Namespace, argv: list[str]) -> EmulatorConfig:
    base: Path = args.base_directory or Path.cwd()
    models: dict[str, list[str]] | None = None
    if args.model:
        models = {k: list(v) for k, v in DEFAULT_MODELS.items()}
        for spec in args.model:
            folder, sep, name = str(spec).partition("=")
            if not sep or not folder or not name:
                raise ValueError(f"--model {spec!r}: expected FOLDER=NAME")
            models.setdefault(folder, [])
            if name not in models[folder]:
                models[folder].append(name)
    faults = Faults()
    for spec in args.fault:
        faults.apply_spec(spec)
    models_dir = args.models_dir
    if models_dir is None and (base / "models").is_dir():
        models_dir = base / "models"
    extra = ExtraPaths()
    for group in args.extra_model_paths_config or []:
        for yaml_file in group:
            extra.load(yaml_file)  # a missing or bad file stops start-up, as in ComfyUI
    output_dir = args.output_directory or base / "output"
    # ComfyUI's main.py also lists what CheckpointSave & co. write into the output folder
    for folder in ("checkpoints", "clip", "vae", "diffusion_models", "loras"):
        extra.add(folder, Path(output_dir).absolute() / folder, is_default=False)
    return EmulatorConfig(
        host=args.listen.split(",")[0],
        port=args.port,
        output_dir=output_dir,
        input_dir=args.input_directory or base / "input",
        # ComfyUI's rule: --temp-directory X puts its temp folder at X/temp
        temp_dir=args.temp_directory / "temp" if args.temp_directory else base / "temp",
        step_time_s=args.step_time,
        models=models,
        models_dir=models_dir,
        preview_method=args.preview_method,
        faults=faults,
        argv=["main.py", *argv],
        extra_paths=extra,
        load_s_per_gb=args.load_s_per_gb,
        load_s_per_file=args.load_s_per_file,
        loaded_models_max=max(1, args.loaded_models),
        disable_smart_memory=args.disable_smart_memory,
        unload_s=max(0.0, args.unload_s),
    )


async def serve(config: EmulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with start_emulator(config) as emu:
        print("Starting server\n", flush=True)
        print(f"To see the GUI go to: {emu.url}", flush=True)
        await stop.wait()
        print("\nStopped server", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=str(args.verbose).upper(), format="%(message)s", stream=sys.stdout)
    if args.make_comfy_folder is not None:
        path = make_comfy_folder(args.make_comfy_folder)
        print(f"Wrote a ComfyUI-shaped folder at {path} (run: {sys.executable} {path / 'main.py'})")
        return 0
    try:
        config = config_from_args(args, argv)
    except ValueError as ex:
        parser.error(str(ex))
    print(f"ComfyUI version: {COMFYUI_VERSION} (comfyrun emulator)", flush=True)
    print(f"Python version: {sys.version}", flush=True)
    print(
        "Total VRAM 0 MB, total RAM 32768 MB\nDevice: cpu (emulated, no models are loaded)",
        flush=True,
    )
    models = config.model_lists()
    print(f"Model lists: {', '.join(f'{k}={len(v)}' for k, v in models.items() if v)}", flush=True)
    if config.faults.to_json() != Faults().to_json():
        print(f"Faults: {config.faults.to_json()}", flush=True)
    asyncio.run(serve(config))
    return 0
