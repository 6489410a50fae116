"""The `comfyrun` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from comfyrun.cli import convert, demo, emulator, jobs, keys, models, runpod, server, workflows

app = typer.Typer(
    name="comfyrun",
    help="A durable job server for ComfyUI workflows.",
    no_args_is_help=True,
    add_completion=False,
)

for module in (server, jobs, demo, emulator, convert, runpod, models, workflows, keys):
    module.register(app)


if __name__ == "__main__":
    app()
