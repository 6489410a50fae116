"""CLI commands for workflow templates: `workflows` (list them), `run NAME -p k=v` (one job) and
`batch NAME items.jsonl` (many, with one progress bar)."""

from __future__ import annotations

import asyncio
import base64
import json
import zipfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from comfyrun import jsontext
from comfyrun.cli.jobs import follow_and_save
from comfyrun.cli.output import ApiKey, ServerUrl, console, fail, out, unreachable
from comfyrun.client import ComfyrunAPIError, ComfyrunClient

ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="NAME=VALUE (repeatable); VALUE @file reads a file"),
]

#: How often `batch` reads the batch's counts while it runs.
BATCH_POLL_S = 1.0


def parse_params(pairs: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    """`-p k=v` pairs typed by the template's schema: strings stay text, other types are read
    as JSON (3, 0.5, true); `@path` gives a file's bytes as base64 (file parameters)."""
    props = schema.get("properties", {})
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r}: write NAME=VALUE", param_hint="-p")
        spec = props.get(name, {})
        if raw.startswith("@") and spec.get("x-file"):
            data = Path(raw[1:]).expanduser().read_bytes()
            values[name] = {"data": base64.b64encode(data).decode(), "name": Path(raw[1:]).name}
        elif spec.get("type") == "string" or spec.get("x-file"):
            values[name] = raw
        else:
            try:
                values[name] = json.loads(raw)
            except ValueError:
                values[name] = raw  # the server says what is wrong with it
    return values


async def _run(
    name: str, pairs: list[str], server: str, api_key: str | None, wait: bool, out_dir: Path | None
) -> int:
    async with ComfyrunClient(server, api_key=api_key) as client:
        try:
            template = await client.workflow(name)
            params = parse_params(pairs, template.get("parameters", {}))
            job = await client.run_workflow(name, params)
            out.print(f"submitted job {job['id']} ({name} {template['version']})")
            return await follow_and_save(client, job, wait=wait, out_dir=out_dir)
        except ComfyrunAPIError as exc:
            raise fail(exc) from exc
        except httpx.HTTPError as exc:
            raise unreachable(server, exc) from exc


def run(
    name: Annotated[str, typer.Argument(help="The workflow template's name")],
    param: ParamOpt = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow it to the end")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Download the outputs here (implies --wait)")
    ] = None,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """Run a workflow template with parameters: comfyrun run portrait -p prompt="a fox"."""
    raise typer.Exit(asyncio.run(_run(name, param or [], server, api_key, wait, out_dir)))


def read_items(path: Path) -> list[dict[str, Any]]:
    """JSON lines: each `{"params": {...}}` or a bare params object."""
    items = []
    try:
        text = path.read_text()
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="ITEMS"
        ) from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = jsontext.loads(line)
        except ValueError as exc:
            raise typer.BadParameter(f"line {number}: {exc}", param_hint="ITEMS") from exc
        if not isinstance(value, dict):
            raise typer.BadParameter(f"line {number}: not a JSON object", param_hint="ITEMS")
        items.append(value if set(value) == {"params"} else {"params": value})
    return items


async def _batch(
    name: str, items: list[dict[str, Any]], server: str, api_key: str | None, out_dir: Path | None
) -> int:
    async with ComfyrunClient(server, api_key=api_key) as client:
        try:
            batch = await client.create_batch(name, items=items)
            out.print(f"batch {batch['id']}: {batch['total']} jobs of {name}")
            batch = await _follow_batch(client, batch)
            counts = ", ".join(f"{k} {v}" for k, v in batch["counts"].items() if v)
            out.print(f"batch {batch['id']}: [bold]{batch['status']}[/bold] ({counts})")
            if out_dir is not None:
                zip_path = out_dir / f"batch-{batch['id']}.zip"
                await client.download_batch(batch["id"], zip_path)
                with zipfile.ZipFile(zip_path) as archive:
                    archive.extractall(out_dir)
                zip_path.unlink()
                out.print(f"outputs saved in {out_dir}", soft_wrap=True)
        except ComfyrunAPIError as exc:
            raise fail(exc) from exc
        except httpx.HTTPError as exc:
            raise unreachable(server, exc) from exc
        return 0 if batch["counts"].get("succeeded", 0) == batch["total"] else 1


async def _follow_batch(client: ComfyrunClient, batch: dict[str, Any]) -> dict[str, Any]:
    with Progress(
        TextColumn("[bold]{task.fields[status]:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("batch", total=batch["total"], status=batch["status"], failed="")
        while True:
            done = sum(batch["counts"].get(s, 0) for s in ("succeeded", "failed", "canceled"))
            failed = batch["counts"].get("failed", 0)
            bar.update(
                task,
                completed=done,
                status=batch["status"],
                failed=f"{failed} failed" if failed else "",
            )
            if batch["status"] in ("completed", "canceled"):
                return batch
            await asyncio.sleep(BATCH_POLL_S)
            batch = await client.batch(batch["id"])


def batch(
    name: Annotated[str, typer.Argument(help="The workflow template's name")],
    items: Annotated[Path, typer.Argument(help="JSON lines, one params object per job")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Save every output here at the end")
    ] = None,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """Run a template once per line of ITEMS, with one progress bar for the batch."""
    raise typer.Exit(asyncio.run(_batch(name, read_items(items), server, api_key, out_dir)))


def workflows(server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None) -> None:
    """The server's workflow templates and their parameters."""

    async def fetch() -> list[dict[str, Any]]:
        async with ComfyrunClient(server, api_key=api_key) as client:
            try:
                return await client.workflows()
            except ComfyrunAPIError as exc:
                raise fail(exc) from exc
            except httpx.HTTPError as exc:
                raise unreachable(server, exc) from exc

    table = Table("name", "version", "valid", "parameters")
    for w in asyncio.run(fetch()):
        params = ", ".join(w["parameters"].get("properties", {}))
        table.add_row(
            w["name"], w["version"], "yes" if w["valid"] else w.get("error", "no"), params
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(workflows)
    app.command()(run)
    app.command()(batch)


__all__ = ["parse_params", "read_items", "register"]
