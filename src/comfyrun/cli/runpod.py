"""`comfyrun runpod-handler`: run comfyrun's execution core as a RunPod serverless worker.

Options are comfyrun's (backends, emulators, data dir, outputs); every other argument
(--test_input '{"input": …}', --rp_serve_api, …) is passed on to runpod.serverless.start. With
--test_input the handler runs that one job locally and exits, as RunPod's SDK does.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from comfyrun.config import Role, Settings, add_backends, load_settings

log = logging.getLogger(__name__)


def runpod_handler(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file (or COMFYRUN_CONFIG)")
    ] = None,
    backend: Annotated[
        list[str] | None, typer.Option("--backend", "-b", help="A ComfyUI URL (repeatable)")
    ] = None,
    comfy: Annotated[
        list[Path] | None, typer.Option("--comfy", help="A ComfyUI folder to run (repeatable)")
    ] = None,
    emulator: Annotated[
        int | None, typer.Option("--emulator", "-e", help="Run N local ComfyUI emulators")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="State directory")] = None,
    outputs: Annotated[
        str | None, typer.Option("--outputs", help="Output storage URL (file://, s3://)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds a job may run (default: none)")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="Logging level")] = "INFO",
) -> None:
    """Run as a RunPod serverless handler (runpod.serverless.start)."""
    from comfyrun.cli.server import configure_logging

    configure_logging(log_level)
    try:
        settings = handler_settings(
            config=config,
            backend=backend,
            comfy=comfy,
            emulator=emulator,
            data_dir=data_dir,
            outputs=outputs,
        )
    except ValueError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not settings.backends and not settings.emulators:
        typer.echo("no backend: give --backend URL, --comfy PATH or --emulator N", err=True)
        raise typer.Exit(2)
    try:
        import runpod
    except ImportError as exc:  # pragma: no cover - runpod is a dependency of this command
        typer.echo("the runpod package is needed: pip install runpod", err=True)
        raise typer.Exit(2) from exc
    from comfyrun.runpod_handler import RunpodHandler

    passed_on = list(ctx.args)
    handler = RunpodHandler(
        settings, close_after_job="--test_input" in passed_on, job_timeout_s=timeout
    )
    sys.argv = [sys.argv[0], *passed_on]  # runpod reads its own arguments from sys.argv
    runpod.serverless.start({"handler": handler})


def handler_settings(
    *,
    config: Path | None,
    backend: list[str] | None,
    comfy: list[Path] | None,
    emulator: int | None,
    data_dir: Path | None,
    outputs: str | None,
) -> Settings:
    """Settings for one worker: an in-memory queue unless the config names a database."""
    settings = load_settings(
        config,
        role=Role.SERVE,
        data_dir=data_dir,
        emulators=emulator,
        output_url=outputs,
    )
    if not settings.db_url:
        settings.db_url = "memory://"
    add_backends(settings, backend, comfy)
    return settings


def register(app: typer.Typer) -> None:
    app.command(
        "runpod-handler",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(runpod_handler)


__all__ = ["handler_settings", "register", "runpod_handler"]
