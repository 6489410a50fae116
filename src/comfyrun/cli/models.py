"""`comfyrun models list|pull|rm`: the server's model cache, through its HTTP API."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from comfyrun.cli.output import ApiKey, ServerUrl, call_server, out

models_app = typer.Typer(help="The model cache: list, pull ahead, evict.", no_args_is_help=True)


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@models_app.command("list")
def models_list(server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None) -> None:
    """Cached model files, most recently used first."""
    body = asyncio.run(call_server(server, api_key, "models"))
    table = Table("names", "size", "in use", "hash")
    for m in body["models"]:
        table.add_row(", ".join(m["names"]), _size(m["size_bytes"]), str(m["in_use"]), m["hash"])
    out.print(table)
    budget = body.get("budget_bytes")
    total = _size(body["total_bytes"])
    out.print(f"{total} of {_size(budget) if budget else 'no limit'}")


@models_app.command("pull")
def models_pull(
    source: Annotated[str, typer.Argument(help="An http(s):// or s3:// URL, or asset:<id>")],
    folder: Annotated[str, typer.Option("--folder", "-f", help="checkpoints, loras, vae, …")],
    name: Annotated[str, typer.Option("--name", "-n", help="The name workflows use")],
    hash_: Annotated[
        str | None, typer.Option("--hash", help="sha256:<hex> or blake3:<hex> to verify")
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="Revalidate a URL cached already (no --hash): a conditional GET; its bytes "
            "are replaced only if they changed",
        ),
    ] = False,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """Fetch a model file into the cache now, ahead of the jobs that need it."""
    spec: dict[str, str] = {"folder": folder, "name": name}
    if source.startswith("asset:"):
        spec["asset_id"] = source.removeprefix("asset:")
    else:
        spec["url"] = source
    if hash_:
        spec["hash"] = hash_
    body: dict[str, object] = dict(spec)
    if refresh:
        body["refresh"] = True
    model = asyncio.run(call_server(server, api_key, "pull_model", body))
    said = f"; {model['refresh'].replace('_', ' ')}" if model.get("refresh") else ""
    out.print(
        f"cached {', '.join(model['names'])} ({_size(model['size_bytes'])}, {model['hash']}){said}"
    )


@models_app.command("rm")
def models_rm(
    key: Annotated[str, typer.Argument(help="folder/name, blake3:<hex> or sha256:<hex>")],
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """Evict a cached model file (refused while a job uses it)."""
    model = asyncio.run(call_server(server, api_key, "remove_model", key))
    out.print(f"evicted {model['hash']} ({_size(model['size_bytes'])})")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


__all__ = ["models_app", "register"]
