"""What the client-side commands share: the consoles, the --server/--api-key options, calling a
server with its errors turned into one-line exits, and tables that never cut an id."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from comfyrun.client import ComfyrunAPIError, ComfyrunClient

console = Console(stderr=True)
#: soft_wrap: a long id or URL stays on one line (a pipe or file is not cut to 80 columns).
out = Console(soft_wrap=True)

ServerUrl = Annotated[
    str, typer.Option("--server", "-s", envvar="COMFYRUN_SERVER", help="comfyrun's base URL")
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="COMFYRUN_API_KEY", help="Bearer token")
]


def fail(exc: ComfyrunAPIError) -> typer.Exit:
    """The server's refusal, printed; the exit to raise."""
    console.print(f"[red]{exc.status} {exc.code}:[/red] {exc.message}")
    if exc.details:
        console.print_json(data=exc.details)
    return typer.Exit(1)


def unreachable(server: str, exc: Exception) -> typer.Exit:
    """No server at `server`, printed with what to do; the exit to raise."""
    console.print(f"[red]cannot reach comfyrun at {server}:[/red] {exc or type(exc).__name__}")
    console.print("start one with `comfyrun serve`, or pass --server URL")
    return typer.Exit(1)


async def call_server(server: str, api_key: str | None, method: str, *args: Any, **kw: Any) -> Any:
    """`ComfyrunClient.<method>(*args, **kw)` against `server`; a refusal or no answer exits."""
    async with ComfyrunClient(server, api_key=api_key) as client:
        try:
            return await getattr(client, method)(*args, **kw)
        except ComfyrunAPIError as exc:
            raise fail(exc) from exc
        except httpx.HTTPError as exc:
            raise unreachable(server, exc) from exc


def print_rows(header: list[str], rows: list[list[str]]) -> None:
    """A table on a terminal; tab-separated lines, never cut or wrapped, anywhere else."""
    if out.is_terminal:
        table = Table(*header)
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    for row in [header, *rows]:
        typer.echo("\t".join(row))  # not rich: it would expand the tabs


__all__ = [
    "ApiKey",
    "ServerUrl",
    "call_server",
    "console",
    "fail",
    "out",
    "print_rows",
    "unreachable",
]
