"""`comfyrun demo`: the README's quick start — a server with emulated backends, ComfyUI's default
text-to-image workflow through it, the image saved."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from comfyrun.cli.jobs import follow_with_progress
from comfyrun.cli.output import console, out
from comfyrun.cli.server import configure_logging, running_server
from comfyrun.client import ComfyrunAPIError, ComfyrunClient
from comfyrun.config import load_settings

#: ComfyUI's default text-to-image graph, in API format (the node ids the UI gives it).
DEFAULT_WORKFLOW: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
    },
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {
            "text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
            "clip": ["4", 1],
        },
    },
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


async def run_demo(out_dir: Path, emulators: int, step_time_s: float) -> Path:
    """Start a server with emulator backends on a free port, run the default text-to-image
    workflow through it, save the image in `out_dir`; returns its path."""
    data_dir = Path(tempfile.mkdtemp(prefix="comfyrun-demo-"))
    settings = load_settings(
        None,
        data_dir=data_dir,
        port=0,
        host="127.0.0.1",
        emulators=emulators,
        emulator_step_time_s=step_time_s,
        db_url=f"sqlite:///{data_dir / 'comfyrun.db'}",
        output_url=(data_dir / "outputs").as_uri(),
        api_keys=[],
    )
    settings.backends = []  # the demo uses its emulators only
    async with running_server(settings) as url:
        console.print(f"comfyrun is running at {url} with {emulators} emulated ComfyUI backends")
        async with ComfyrunClient(url) as client:
            job = await client.submit(DEFAULT_WORKFLOW)
            console.print(f"submitted ComfyUI's default text-to-image workflow as job {job['id']}")
            job = await follow_with_progress(client, job["id"])
            if job["status"] != "succeeded" or not job["outputs"]:
                raise RuntimeError(f"the demo job ended {job['status']}: {job.get('error')}")
            paths = await client.download_outputs(job, out_dir)
    return paths[0].resolve()


def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("demo-output"),
    emulators: Annotated[int, typer.Option("--emulators", min=1)] = 2,
    step_time: Annotated[float, typer.Option("--step-time")] = 0.05,
) -> None:
    """The quick start: a server with 2 emulated backends, one text-to-image job, one image."""
    configure_logging("WARNING")
    try:
        path = asyncio.run(run_demo(out_dir, emulators, step_time))
    except (RuntimeError, ComfyrunAPIError, OSError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    out.print(f"output image saved to {path}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(demo)
