"""CLI command: `comfyrun convert ui.json [--object-info FILE | --server URL --api-key K]`.

Node definitions come from --object-info when given, else from the /object_info of a running
comfyrun (default `COMFYRUN_SERVER` or http://127.0.0.1:8189) or ComfyUI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from comfyrun import jsontext
from comfyrun.core.workflow import convert_ui_to_api, is_api_prompt, is_ui_workflow
from comfyrun.errors import ConversionError


def _read_json(path: Path, what: str) -> Any:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return jsontext.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{what} {path} is not valid JSON: {exc}") from None


def _fetch_object_info(server: str, api_key: str | None, timeout_s: float) -> Any:
    url = server.rstrip("/") + "/object_info"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, timeout=timeout_s, headers=headers)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise typer.BadParameter(
            f"cannot load object_info from {url}: {exc}; pass --object-info FILE (a saved "
            "/object_info response), or --server URL (and --api-key) of a running comfyrun "
            "or ComfyUI"
        ) from None


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
        str,
        typer.Option(
            "--server",
            "-s",
            envvar="COMFYRUN_SERVER",
            help="comfyrun (or ComfyUI) base URL to read /object_info from, when no "
            "--object-info is given.",
        ),
    ] = "http://127.0.0.1:8189",
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="COMFYRUN_API_KEY", help="Bearer token for --server."),
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
        else:
            info = _fetch_object_info(server, api_key, timeout_s)
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
