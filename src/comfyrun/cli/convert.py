"""CLI command: `comfyrun convert ui.json [--object-info FILE | --server URL] > api.json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from comfyrun.core.workflow import convert_ui_to_api, is_api_prompt, is_ui_workflow
from comfyrun.errors import ConversionError


def _read_json(path: Path, what: str) -> Any:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{what} {path} is not valid JSON: {exc}") from None


def _fetch_object_info(server: str, timeout_s: float) -> Any:
    url = server.rstrip("/") + "/object_info"
    try:
        response = httpx.get(url, timeout=timeout_s)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise typer.BadParameter(f"cannot load object_info from {url}: {exc}") from None


def convert(
    workflow: Annotated[
        Path,
        typer.Argument(
            metavar="WORKFLOW.json", help="UI-format workflow JSON file ('-' for stdin)."
        ),
    ],
    object_info: Annotated[
        Path | None,
        typer.Option("--object-info", help="object_info.json of the target ComfyUI (offline)."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="ComfyUI base URL to read /object_info from instead."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the prompt here, not stdout.")
    ] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds for --server.")] = 30.0,
) -> None:
    """Convert a UI-format workflow to the API prompt the ComfyUI frontend would send."""
    ui = _read_json(workflow, "workflow")
    if is_api_prompt(ui):
        prompt = ui
    elif not is_ui_workflow(ui):
        raise typer.BadParameter(f"{workflow} is neither a UI workflow nor an API prompt")
    else:
        if object_info is not None:
            info = _read_json(object_info, "object_info")
        elif server is not None:
            info = _fetch_object_info(server, timeout_s)
        else:
            raise typer.BadParameter(
                "node definitions are needed: pass --object-info FILE (a saved /object_info "
                "response) or --server URL of a running ComfyUI"
            )
        try:
            prompt = convert_ui_to_api(ui, info)
        except ConversionError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(code=2) from None
    text = json.dumps(prompt, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("convert")(convert)
