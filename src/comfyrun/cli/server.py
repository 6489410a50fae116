"""CLI commands: serve, api, worker (run the server), submit, jobs, backends (talk to one), and
demo (the README's quick start)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from comfyrun.client import ComfyrunAPIError, ComfyrunClient
from comfyrun.config import BackendConfig, Role, Settings, load_settings

log = logging.getLogger(__name__)

console = Console(stderr=True)
#: soft_wrap: a long id or URL stays on one line (a pipe or file is not cut to 80 columns).
out = Console(soft_wrap=True)

ServerUrl = Annotated[
    str, typer.Option("--server", "-s", envvar="COMFYRUN_SERVER", help="comfyrun's base URL")
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="COMFYRUN_API_KEY", help="Bearer token")
]

#: ComfyUI's default text-to-image graph, in API format (the node ids the UI gives it).
DEFAULT_WORKFLOW: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
    },
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {
            "text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
            "clip": ["4", 1],
        },
    },
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # one line per outbound HTTP call drowns the job transitions
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


# running the server ----------------------------------------------------------------------------


class CannotListen(OSError):
    """The address to serve on is taken (or not ours to take)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host, self.port, self.reason = host, port, reason


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 = a free port), so the real port is known before serving.
    Raises CannotListen when the port is busy or the address is not this machine's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every response waits ~40 ms for a delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else str(exc.strerror)
        raise CannotListen(host, port, reason) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[str]:
    """Serve comfyrun in this event loop; yields its base URL once it accepts requests."""
    from comfyrun.api.app import create_app

    app = create_app(settings)
    async with serving_app(
        app,
        settings.host,
        settings.port,
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        keep_alive_s=settings.keep_alive_s,
    ) as url:
        yield url


#: The request line and headers of one request, at most (h11's default is 16 KiB).
MAX_HEADER_BYTES = 64 * 1024


@contextlib.asynccontextmanager
async def serving_app(
    app: Any,
    host: str,
    port: int,
    *,
    grace_s: int = 5,
    max_header_bytes: int = MAX_HEADER_BYTES,
    header_timeout_s: float = 30.0,
    keep_alive_s: int = 75,
) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn in this event loop on host:port (0 picks a free port);
    yields its base URL once it accepts requests, and stops it on exit. Requests whose line
    and headers exceed `max_header_bytes` are refused (400), those not whole within
    `header_timeout_s` of their first byte get 408; either way their connection is closed.
    A connection idle `keep_alive_s` after its last answer is closed."""
    import uvicorn

    from comfyrun.api.http_protocol import capped_protocol

    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=grace_s,
        timeout_keep_alive=keep_alive_s,
        # httptools (C) with the head capped as h11 would (api/http_protocol.py)
        http=capped_protocol(max_header_bytes, header_timeout_s),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server stopped during start-up")
            await asyncio.sleep(0.02)
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, grace_s + 15)
        sock.close()


async def _serve_forever(settings: Settings) -> None:
    async with running_server(settings) as url:
        # one parseable line for scripts and tests: the address actually bound
        print(f"comfyrun {settings.role.value} listening on {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def _settings(
    role: Role,
    *,
    config: Path | None,
    backend: list[str] | None,
    comfy: list[Path] | None,
    emulator: int | None,
    db: str | None,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    api_key: str | None,
    worker_id: str | None = None,
    output_url: str | None = None,
    comfy_python: str | None = None,
    workflows: Path | None = None,
    types: str | None = None,
    handler: list[str] | None = None,
) -> Settings:
    settings = load_settings(
        config,
        types=types,
        handlers=handler or None,
        workflows_dir=workflows,
        role=role,
        comfy_python=comfy_python,
        db_url=db,
        host=host,
        port=port,
        data_dir=data_dir,
        emulators=emulator,
        api_key=api_key,
        worker_id=worker_id,
        output_url=output_url,
    )
    extra = [BackendConfig(url=u) for u in backend or []]
    extra += [BackendConfig(comfy_path=p) for p in comfy or []]
    if extra:
        settings.backends = [*settings.backends, *extra]
    return settings


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (or COMFYRUN_CONFIG)")
]
BackendOpt = Annotated[
    list[str] | None, typer.Option("--backend", "-b", help="A ComfyUI URL (repeatable)")
]
ComfyOpt = Annotated[
    list[Path] | None, typer.Option("--comfy", help="A ComfyUI folder to run (repeatable)")
]
ComfyPythonOpt = Annotated[
    str | None,
    typer.Option(
        "--comfy-python",
        help="The Python that runs managed ComfyUI folders (or COMFY_PYTHON; default: the "
        "folder's venv, else a python3 on PATH that has torch)",
    ),
]
EmulatorOpt = Annotated[
    int | None, typer.Option("--emulator", "-e", help="Run N local ComfyUI emulators")
]
DbOpt = Annotated[str | None, typer.Option("--db", help="sqlite:///file, postgresql://…")]
HostOpt = Annotated[str | None, typer.Option("--host")]
PortOpt = Annotated[int | None, typer.Option("--port", "-p", help="0 = a free port")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir")]
OutputsOpt = Annotated[str | None, typer.Option("--outputs", help="file:///dir or s3://bucket")]
LogOpt = Annotated[str, typer.Option("--log-level", envvar="COMFYRUN_LOG_LEVEL")]
WorkflowsOpt = Annotated[
    Path | None,
    typer.Option(
        "--workflows", help="A folder of workflow templates (NAME.json, NAME.params.json)"
    ),
]
TypesOpt = Annotated[
    str | None,
    typer.Option(
        "--types",
        help="The job types this worker runs, e.g. comfy,ffmpeg,image (default: comfy when "
        "it has backends, plus every handler)",
    ),
]
HandlerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--handler", help="A handler to load: module:function or type=module:function (repeatable)"
    ),
]
ServeKey = Annotated[
    str | None, typer.Option("--api-key", help="Require this bearer token on the API")
]


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (uvicorn[standard] brings it) unless the
    settings ask for the standard one (`event_loop = "asyncio"`): the server spends a good
    part of each job in the event loop itself, which uvloop runs in C."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run(role: Role, **kwargs: Any) -> None:
    log_level = kwargs.pop("log_level")
    configure_logging(log_level)
    try:
        settings = _settings(role, **kwargs)
        if role is not Role.API:  # a worker's types and handlers, before anything starts
            from comfyrun.api.worker_types import handler_registry, type_plan

            registry = handler_registry(settings)
            type_plan(
                settings, registry, has_backends=bool(settings.backends or settings.emulators)
            )
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
            runner.run(_serve_forever(settings))
    except CannotListen as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None


def serve(
    config: ConfigOpt = None,
    backend: BackendOpt = None,
    comfy: ComfyOpt = None,
    comfy_python: ComfyPythonOpt = None,
    emulator: EmulatorOpt = None,
    db: DbOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    outputs: OutputsOpt = None,
    api_key: ServeKey = None,
    workflows: WorkflowsOpt = None,
    types: TypesOpt = None,
    handler: HandlerOpt = None,
    log_level: LogOpt = "INFO",
) -> None:
    """Run the API and a worker (the dispatcher) in one process."""
    _run(
        Role.SERVE,
        types=types,
        handler=handler,
        config=config,
        backend=backend,
        comfy=comfy,
        comfy_python=comfy_python,
        emulator=emulator,
        db=db,
        host=host,
        port=port,
        data_dir=data_dir,
        output_url=outputs,
        api_key=api_key,
        workflows=workflows,
        log_level=log_level,
    )


def api(
    config: ConfigOpt = None,
    db: DbOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    outputs: OutputsOpt = None,
    api_key: ServeKey = None,
    workflows: WorkflowsOpt = None,
    log_level: LogOpt = "INFO",
) -> None:
    """Run the HTTP API only; workers elsewhere share its database."""
    _run(
        Role.API,
        config=config,
        backend=None,
        comfy=None,
        emulator=None,
        db=db,
        host=host,
        port=port,
        data_dir=data_dir,
        output_url=outputs,
        api_key=api_key,
        workflows=workflows,
        log_level=log_level,
    )


def worker(
    config: ConfigOpt = None,
    backend: BackendOpt = None,
    comfy: ComfyOpt = None,
    comfy_python: ComfyPythonOpt = None,
    emulator: EmulatorOpt = None,
    db: DbOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    outputs: OutputsOpt = None,
    worker_id: Annotated[str | None, typer.Option("--worker-id")] = None,
    types: TypesOpt = None,
    handler: HandlerOpt = None,
    log_level: LogOpt = "INFO",
) -> None:
    """Run a worker: claims jobs from the shared database and runs them on its backends. Its
    HTTP port serves only /api/v2/health, /ready and /metrics."""
    _run(
        Role.WORKER,
        config=config,
        backend=backend,
        comfy=comfy,
        comfy_python=comfy_python,
        emulator=emulator,
        db=db,
        host=host,
        port=port if port is not None else 0,
        data_dir=data_dir,
        output_url=outputs,
        api_key=None,
        worker_id=worker_id,
        types=types,
        handler=handler,
        log_level=log_level,
    )


# talking to a server ---------------------------------------------------------------------------


def _fail(exc: ComfyrunAPIError) -> typer.Exit:
    console.print(f"[red]{exc.status} {exc.code}:[/red] {exc.message}")
    if exc.details:
        console.print_json(data=exc.details)
    return typer.Exit(1)


def _unreachable(server: str, exc: Exception) -> typer.Exit:
    console.print(f"[red]cannot reach comfyrun at {server}:[/red] {exc or type(exc).__name__}")
    console.print("start one with `comfyrun serve`, or pass --server URL")
    return typer.Exit(1)


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


async def _submit(
    path: Path,
    server: str,
    api_key: str | None,
    wait: bool,
    out_dir: Path | None,
    priority: int,
) -> int:
    try:
        workflow = json.loads(await asyncio.to_thread(path.read_text))
    except (OSError, json.JSONDecodeError) as exc:
        console.print(f"[red]cannot read {path}:[/red] {exc}")
        return 2
    if isinstance(workflow, dict) and "prompt" in workflow and "workflow" not in workflow:
        workflow = workflow["prompt"]  # a saved ComfyUI /prompt body
    async with ComfyrunClient(server, api_key=api_key) as client:
        try:
            job = await client.submit(workflow, priority=priority)
            out.print(f"submitted job {job['id']}")
            return await follow_and_save(client, job, wait=wait, out_dir=out_dir)
        except ComfyrunAPIError as exc:
            raise _fail(exc) from exc
        except httpx.HTTPError as exc:
            raise _unreachable(server, exc) from exc


def submit(
    workflow: Annotated[Path, typer.Argument(help="API-format (or UI-format) workflow JSON")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow it to the end")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Download the outputs here (implies --wait)")
    ] = None,
    priority: Annotated[int, typer.Option("--priority")] = 0,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """Submit a workflow; with --wait, show its progress and where its outputs are."""
    raise typer.Exit(asyncio.run(_submit(workflow, server, api_key, wait, out_dir, priority)))


jobs_app = typer.Typer(help="List, show and cancel jobs.", no_args_is_help=True)


async def _call(server: str, api_key: str | None, method: str, *args: Any, **kw: Any) -> Any:
    async with ComfyrunClient(server, api_key=api_key) as client:
        try:
            return await getattr(client, method)(*args, **kw)
        except ComfyrunAPIError as exc:
            raise _fail(exc) from exc
        except httpx.HTTPError as exc:
            raise _unreachable(server, exc) from exc


@jobs_app.command("list")
def jobs_list(
    status: Annotated[list[str] | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    server: ServerUrl = "http://127.0.0.1:8189",
    api_key: ApiKey = None,
) -> None:
    """The newest jobs."""
    page = asyncio.run(_call(server, api_key, "list_jobs", status=status, limit=limit))
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


@jobs_app.command("show")
def jobs_show(
    job_id: str, server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None
) -> None:
    """One job as JSON."""
    out.print_json(data=asyncio.run(_call(server, api_key, "get", job_id)))


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: str, server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None
) -> None:
    """Cancel a job (queued: at once; running: interrupted on its backend)."""
    job = asyncio.run(_call(server, api_key, "cancel", job_id))
    out.print(f"job {job['id']}: {job['status']}")


def backends(server: ServerUrl = "http://127.0.0.1:8189", api_key: ApiKey = None) -> None:
    """The server's ComfyUI backends and their states."""
    items = asyncio.run(_call(server, api_key, "backends"))
    rows = [
        [
            b["name"],
            b["url"] or "",
            b["state"],
            str(b["inflight"]),
            str(b["jobs_done"]),
            b["last_error"] or "",
        ]
        for b in items
    ]
    print_rows(["name", "url", "state", "inflight", "done", "last error"], rows)
    for b in items:
        if b.get("log_tail") and b["state"] in ("error", "crashed"):
            out.print(f"[bold]{b['name']}[/bold] log:")
            for line in b["log_tail"]:
                out.print(f"  {line}")


# demo ------------------------------------------------------------------------------------------


async def run_demo(out_dir: Path, emulators: int, step_time_s: float) -> Path:
    """Start a server with emulator backends on a free port, run the default text-to-image
    workflow through it, save the image in `out_dir`; returns its path."""
    data_dir = Path(tempfile.mkdtemp(prefix="comfyrun-demo-"))
    settings = load_settings(
        None,
        data_dir=data_dir,
        port=0,
        host="127.0.0.1",
        emulators=emulators,
        emulator_step_time_s=step_time_s,
        db_url=f"sqlite:///{data_dir / 'comfyrun.db'}",
        output_url=(data_dir / "outputs").as_uri(),
        api_keys=[],
    )
    settings.backends = []  # the demo uses its emulators only
    async with running_server(settings) as url:
        console.print(f"comfyrun is running at {url} with {emulators} emulated ComfyUI backends")
        async with ComfyrunClient(url) as client:
            job = await client.submit(DEFAULT_WORKFLOW)
            console.print(f"submitted ComfyUI's default text-to-image workflow as job {job['id']}")
            job = await follow_with_progress(client, job["id"])
            if job["status"] != "succeeded" or not job["outputs"]:
                raise RuntimeError(f"the demo job ended {job['status']}: {job.get('error')}")
            paths = await client.download_outputs(job, out_dir)
    return paths[0].resolve()


def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("demo-output"),
    emulators: Annotated[int, typer.Option("--emulators")] = 2,
    step_time: Annotated[float, typer.Option("--step-time")] = 0.05,
) -> None:
    """The quick start: a server with 2 emulated backends, one text-to-image job, one image."""
    configure_logging("WARNING")
    try:
        path = asyncio.run(run_demo(out_dir, emulators, step_time))
    except (RuntimeError, ComfyrunAPIError, OSError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    out.print(f"output image saved to {path}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(serve)
    app.command()(api)
    app.command()(worker)
    app.command()(submit)
    app.add_typer(jobs_app, name="jobs")
    app.command()(backends)
    app.command()(demo)
