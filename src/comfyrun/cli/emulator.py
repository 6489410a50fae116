"""CLI command: `comfyrun emulator [ComfyUI main.py flags]` runs the ComfyUI emulator."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""

    @app.command(
        "emulator",
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],
        },
        add_help_option=False,
    )
    def emulator(ctx: typer.Context) -> None:
        """Run a ComfyUI stand-in (same protocol, simulated models). Accepts ComfyUI's flags plus
        --step-time, --models-dir, --model FOLDER=NAME, --fault SPEC, --make-comfy-folder PATH;
        `comfyrun emulator --help` lists them."""
        from comfyrun.comfy.emulator.cli import main

        raise typer.Exit(main(list(ctx.args)))
