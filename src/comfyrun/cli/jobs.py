"""CLI commands that talk to a running server: submit, jobs (list, show, cancel), backends
(list, drain, resume, restart, stop, start)."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from comfyrun import jsontext
from comfyrun.cli.output import (
    ApiKey,
    ServerUrl,
    call_server,
    console,
    fail,
    out,
    print_rows,
    unreachable,
)
from comfyrun.client import ComfyrunAPIError, ComfyrunClient
from comfyrun.core.job import COMFY


async def follow_with_progress(client: ComfyrunClient, job_id: str) -> dict[str, Any]:
    """A Rich progress bar fed by the job's event stream; returns the final job."""
    with Progress(
        TextColumn("[bold]{task.fields[status]:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[message]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("job", total=1.0, status="queued", message="")
        async for ev in client.events(job_id):
            if ev.event == "status":
                status = str(ev.data.get("status"))
                pos = ev.data.get("queue_position")
                msg = f"position {pos}" if status == "queued" and pos is not None else ""
                bar.update(task, status=status, message=msg)
                if status == "succeeded":
                    bar.update(task, completed=1.0)
            elif ev.event == "progress":
                message = ev.data.get("message") or ""
                bar.update(task, completed=float(ev.data.get("value", 0.0)), message=message)
            elif ev.event == "output":
                bar.console.print(f"output: {ev.data.get('name')} ({ev.data.get('type')})")
    return await client.get(job_id)


async def follow_and_save(
    client: ComfyrunClient, job: dict[str, Any], *, wait: bool, out_dir: Path | None
) -> int:
    """After a submission: follow the job to its end (with `wait` or an `out_dir`), print it,
    save its outputs; the exit code (0 succeeded, 1 not; 0 when not followed)."""
    if not wait and out_dir is None:
        return 0
    job = await follow_with_progress(client, job["id"])
    _print_job(job)
    if out_dir is not None and job.get("outputs"):
        for p in await client.download_outputs(job, out_dir):
            out.print(f"saved {p}", soft_wrap=True)
    return 0 if job["status"] == "succeeded" else 1


def _print_job(job: dict[str, Any]) -> None:
    out.print(f"job {job['id']}: [bold]{job['status']}[/bold]")
    if job.get("error"):
        err = job["error"]
        out.print(f"  error {err.get('code')}: {err.get('message')}")
    for o in job.get("outputs", []):
        out.print(
            f"  output {o['node_id']}/{o['name']} {o['type']} {o['size_bytes']} B  {o['url']}"
        )


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What `comfyrun submit` sends besides its workflow."""

    job_type: str = COMFY
    params: dict[str, Any] | None = None
    then: list[dict[str, Any]] | None = None
    inputs: tuple[Path, ...] = ()
    priority: int = 0


def json_value(text: str, what: str) -> Any:
    """A JSON option's value: JSON text, or `@FILE` for a file holding it."""
    source = text
    try:
        if text.startswith("@"):
            source = Path(text[1:]).read_text(encoding="utf-8")
        return jsontext.loads(source)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"{what}: {exc}") from exc


def _input(path: Path) -> dict[str, Any]:
    return {"name": path.name, "data": base64.b64encode(path.read_bytes()).decode()}


async def _submit(
    path: Path | None,
    server: str,
    api_key: str | None,
    wait: bool,
    out_dir: Path | None,
    spec: JobSpec,
) -> int:
    workflow: Any = None
    try:
        if path is not None:
            workflow = jsontext.loads(await asyncio.to_thread(path.read_text))
        inputs = [await asyncio.to_thread(_input, p) for p in spec.inputs]
    except (OSError, ValueError) as exc:
        console.print(
            f"[red]cannot read {exc.filename if isinstance(exc, OSError) else path}:[/red] {exc}"
        )
        return 2
    if path is not None and not isinstance(workflow, dict):
        console.print(f"[red]{path} is not a workflow:[/red] a JSON object is expected")
        return 2
    if isinstance(workflow, dict) and "prompt" in workflow and "workflow" not in workflow:
        workflow = workflow["prompt"]  # a saved ComfyUI /prompt body
    async with ComfyrunClient(server, api_key=api_key) as client:
        try:
            job = await client.submit(
                workflow,
                job_type=spec.job_type,
                params=spec.params,
                then=spec.then,
                inputs=inputs or None,
                priority=spec.priority,
            )
            out.print(f"submitted job {job['id']}")
            return await follow_and_save(client, job, wait=wait, out_dir=out_dir)
        except ComfyrunAPIError as exc:
            raise fail(exc) from exc
        except httpx.HTTPError as exc:
            raise unreachable(server, exc) from exc


def submit(
    workflow: Annotated[
        Path | None,
        typer.Argument(help="API-format (or UI-format) workflow JSON (a comfy job's)"),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow it to the end")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Download the outputs here (implies --wait)")
    ] = None,
    priority: Annotated[int, typer.Option("--priority")] = 0,
    job_type: Annotated[
        str, typer.Option("--type", "-t", help="The job's type: comfy, or a handler's (image, …)")
    ] = COMFY,
    params: Annotated[
        str | None, typer.Option("--params", help="A handler job's params: JSON, or @FILE")
    ] = None,
    then: Annotated[
        str | None, typer.Option("--then", help="Follow-up steps: a JSON list, or @FILE")
    ] = None,
    inputs: Annotated[
        list[Path] | None,
        typer.Option("--input", "-i", help="A file for the job (repeatable), sent with it"),
    ] = None,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """Submit a workflow, or a job of another type (--type image --params '{...}' --input
    in.png); with --wait, show its progress and where its outputs are."""
    if (workflow is None) == (job_type == COMFY):
        raise typer.BadParameter(
            "a comfy job needs its WORKFLOW file; a job of another --type takes --params instead"
        )
    spec = JobSpec(
        job_type=job_type,
        params=_object(json_value(params, "--params"), "--params") if params else None,
        then=_steps(json_value(then, "--then")) if then else None,
        inputs=tuple(inputs or ()),
        priority=priority,
    )
    raise typer.Exit(asyncio.run(_submit(workflow, server, api_key, wait, out_dir, spec)))


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{what} must be a JSON object")
    return value


def _steps(value: Any) -> list[dict[str, Any]]:
    steps = value if isinstance(value, list) else [value]
    return [_object(step, "--then") for step in steps]


jobs_app = typer.Typer(help="List, show and cancel jobs.", no_args_is_help=True)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[list[str] | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """The newest jobs."""
    page = asyncio.run(call_server(server, api_key, "list_jobs", status=status, limit=limit))
    rows = [
        [
            j["id"],
            j["status"],
            str(j["priority"]),
            j["created_at"],
            j["backend"] or "",
            str(len(j["outputs"])),
        ]
        for j in page["jobs"]
    ]
    print_rows(["id", "status", "priority", "created", "backend", "outputs"], rows)


@jobs_app.command("show")
def jobs_show(
    job_id: str, server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None
) -> None:
    """One job as JSON."""
    out.print_json(data=asyncio.run(call_server(server, api_key, "get", job_id)))


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: str, server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None
) -> None:
    """Cancel a job (queued: at once; running: interrupted on its backend)."""
    job = asyncio.run(call_server(server, api_key, "cancel", job_id))
    out.print(f"job {job['id']}: {job['status']}")


backends_app = typer.Typer(
    help="The server's ComfyUI backends: list them (no command), or drain, resume, restart, "
    "stop or start one (an admin key).",
)


@backends_app.callback(invoke_without_command=True)
def backends(
    context: typer.Context,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """The server's ComfyUI backends and their states (with a command: operate one)."""
    if context.invoked_subcommand is not None:
        return
    items = asyncio.run(call_server(server, api_key, "backends"))
    rows = [
        [
            b["name"],
            b["url"] or "",
            _shown_state(b),
            str(b["inflight"]),
            str(b.get("depth", 2)),
            str(b["jobs_done"]),
            b["last_error"] or "",
        ]
        for b in items
    ]
    print_rows(["name", "url", "state", "inflight", "depth", "done", "last error"], rows)
    for b in items:
        if b.get("log_tail") and b["state"] in ("error", "crashed"):
            out.print(f"[bold]{b['name']}[/bold] log:")
            for line in b["log_tail"]:
                out.print(f"  {line}")


def _shown_state(b: dict[str, Any]) -> str:
    """The state, with an admin's hold that it does not say itself."""
    if b.get("kept_stopped") and b["state"] != "stopped":
        return f"{b['state']} (stopping)"
    if b.get("kept_stopped"):
        return "stopped (kept)"
    if b.get("draining") and b["state"] != "draining":
        return f"{b['state']} (draining)"
    return str(b["state"])


Name = Annotated[str, typer.Argument(help="The backend's name, as `comfyrun backends` lists it")]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="At once: the jobs running on it are given up as after a crash and retried",
    ),
]


def _operate(server: str, api_key: str | None, name: str, action: str, force: bool) -> None:
    b = asyncio.run(call_server(server, api_key, "backend_action", name, action, force=force))
    out.print(f"backend {b['name']}: {_shown_state(b)}, {b['inflight']} jobs on it")


@backends_app.command("drain")
def backends_drain(
    name: Name, server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None
) -> None:
    """Take no new job on the backend; the jobs on it finish there."""
    _operate(server, api_key, name, "drain", False)


@backends_app.command("resume")
def backends_resume(
    name: Name, server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None
) -> None:
    """Undo a drain or a stop: the backend takes jobs again."""
    _operate(server, api_key, name, "resume", False)


@backends_app.command("restart")
def backends_restart(
    name: Name,
    force: Force = False,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """Restart a managed backend's ComfyUI once its jobs are done (--force: now); reconnect to
    any other backend."""
    _operate(server, api_key, name, "restart", force)


@backends_app.command("stop")
def backends_stop(
    name: Name,
    force: Force = False,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """Stop a managed backend's ComfyUI once its jobs are done (--force: now); it stays
    stopped until `start` or `resume`. Another backend is drained."""
    _operate(server, api_key, name, "stop", force)


@backends_app.command("start")
def backends_start(
    name: Name, server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None
) -> None:
    """Start a managed backend's ComfyUI now (undoes a stop)."""
    _operate(server, api_key, name, "start", False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(submit)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(backends_app, name="backends")
