"""`comfyrun keys create|list|revoke`: API keys, through a running server's admin API (with an
admin key: one from the server's config). Output is plain text, never cut or wrapped."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import httpx
import typer

from comfyrun.client import ComfyrunAPIError, ComfyrunClient

ServerUrl = Annotated[
    str, typer.Option("--server", "-s", envvar="COMFYRUN_SERVER", help="comfyrun's base URL")
]
AdminKey = Annotated[
    str | None, typer.Option("--api-key", envvar="COMFYRUN_API_KEY", help="An admin key")
]
DEFAULT_SERVER = "http://127.0.0.1:8189"

keys_app = typer.Typer(help="Create, list and revoke API keys (tenants).", no_args_is_help=True)


async def _call(server: str, api_key: str | None, method: str, *args: Any, **kw: Any) -> Any:
    async with ComfyrunClient(server, api_key=api_key) as client:
        try:
            return await getattr(client, method)(*args, **kw)
        except ComfyrunAPIError as exc:
            typer.echo(f"{exc.status} {exc.code}: {exc.message}", err=True)
            raise typer.Exit(1) from exc
        except httpx.HTTPError as exc:
            typer.echo(f"cannot reach comfyrun at {server}: {exc or type(exc).__name__}", err=True)
            raise typer.Exit(1) from exc


@keys_app.command("create")
def create(
    name: str,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="submit, read or admin (repeatable; default submit+read)"),
    ] = None,
    max_queued: Annotated[
        int | None, typer.Option("--max-queued", help="At most N queued or running jobs")
    ] = None,
    per_minute: Annotated[
        int | None, typer.Option("--per-minute", help="At most N submissions a minute")
    ] = None,
    server: ServerUrl = DEFAULT_SERVER,
    api_key: AdminKey = None,
) -> None:
    """Mint a key. Its JSON is printed once, with the key: keep it, it is not stored."""
    key = asyncio.run(
        _call(
            server,
            api_key,
            "create_key",
            name,
            scopes=scope or ("submit", "read"),
            max_queued=max_queued,
            per_minute=per_minute,
        )
    )
    typer.echo(json.dumps(key, indent=2))


@keys_app.command("list")
def list_keys(server: ServerUrl = DEFAULT_SERVER, api_key: AdminKey = None) -> None:
    """Every key, tab-separated: id, name, scopes, quota, jobs, GPU seconds, state."""
    keys = asyncio.run(_call(server, api_key, "list_keys"))
    typer.echo("id\tname\tscopes\tmax_queued\tper_minute\tjobs\tgpu_seconds\tstate")
    for k in keys:
        quota = k["quota"]
        typer.echo(
            "\t".join(
                [
                    k["id"],
                    k["name"],
                    ",".join(k["scopes"]),
                    str(quota.get("max_queued") or "-"),
                    str(quota.get("per_minute") or "-"),
                    str(k["usage"]["jobs"]),
                    f"{k['usage']['gpu_seconds']:.1f}",
                    "revoked" if k.get("revoked_at") else "active",
                ]
            )
        )


@keys_app.command("revoke")
def revoke(key_id: str, server: ServerUrl = DEFAULT_SERVER, api_key: AdminKey = None) -> None:
    """Revoke a key: it stops working on every node within seconds; its jobs stay."""
    asyncio.run(_call(server, api_key, "revoke_key", key_id))
    typer.echo(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


__all__ = ["keys_app", "register"]
