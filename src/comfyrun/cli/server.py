"""CLI commands that run the server: serve, api, worker (and the helpers that serve an app)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from comfyrun.backends.process.spec import load_prompt_file
from comfyrun.cli.output import console
from comfyrun.config import Role, Settings, add_backends, load_settings
from comfyrun.config_check import describe_invalid
from comfyrun.errors import InvalidRequest
from comfyrun.outputs import open_output_storage
from comfyrun.store.factory import check_store_url

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # one line per outbound HTTP call drowns the job transitions
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def quiet_uvicorn_trace() -> None:
    """uvicorn's protocols build a TRACE line for each connection, upgrade and close whenever
    its "uvicorn.error" logger's own level is NOTSET (0, below TRACE), which is what it is when
    uvicorn does not configure logging (log_config=None, as here), and let the logging module
    drop it. Its level is pinned to the level it has in effect now, so they do not."""
    logger = logging.getLogger("uvicorn.error")
    if logger.level == logging.NOTSET:
        logger.setLevel(logger.getEffectiveLevel())
    if not any(isinstance(f, LastLineOfTraceback) for f in logger.filters):
        logger.addFilter(LastLineOfTraceback())


class LastLineOfTraceback(logging.Filter):
    """A start-up that failed (the store unreachable, say) is logged by uvicorn as the whole
    traceback the app's lifespan gave it: cut to its last line, what went wrong, unless
    COMFYRUN_DEBUG is set. (An error comfyrun logs itself keeps its traceback.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("Traceback (most recent call last)") and not os.environ.get(
            "COMFYRUN_DEBUG"
        ):
            last = [line for line in text.splitlines() if line.strip()][-1]
            record.msg, record.args = f"start-up failed: {last}", ()
        return True


# running the server ----------------------------------------------------------------------------


class StartupFailed(RuntimeError):
    """The app's start-up failed (uvicorn logged why)."""


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
    quiet_uvicorn_trace()
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=grace_s,
        timeout_keep_alive=keep_alive_s,
        # httptools (C) with the head capped as h11 would (api/http_protocol.py)
        http=capped_protocol(max_header_bytes, header_timeout_s),
        # websocket messages are small JSON and already-compressed previews: deflating each one
        # cost ~0.5 ms of comfyrun's CPU per ComfyUI-face job (of ~6), and the client's inflate
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise StartupFailed("the server stopped during start-up (the error above)")
            await asyncio.sleep(0.02)
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, grace_s + 15)
        sock.close()


#: Allocations (less deallocations) between two collections of the youngest generation, and
#: collections of one generation between two of the next (Python's: 700, 10, 10).
GC_YOUNG, GC_OLDER = 5_000, 10


def freeze_startup_heap() -> None:
    """Leave what start-up made (modules, the app and its ~200 routes, models, object_info:
    a few hundred thousand objects) out of the cyclic garbage collector's scans: a full
    collection walked all of it, ~90-100 ms with the event loop stopped, every few seconds
    under load. What start-up left as garbage is collected first; what it made is never
    cyclic garbage later (it lives as long as the process).

    The young generation is then collected every GC_YOUNG allocations, not Python's 700: a
    job's requests, rows and messages allocate thousands of short-lived objects, nearly all
    freed by their reference counts, and a scan every 700 of them cost ~4 % of a busy
    `serve`'s CPU (bench/hot_path.py --fleet: ~2.9 -> ~2.8 ms a job). Under 8 clients of the
    ComfyUI face for 8 s: collections 394 -> 31, their time 212 -> ~90 ms, the longest pause
    about as before (8-11 ms; 10,000 made it ~20)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, GC_OLDER, GC_OLDER)


async def _serve_forever(settings: Settings) -> None:
    async with running_server(settings) as url:
        freeze_startup_heap()
        # one parseable line for scripts and tests: the address actually bound
        print(f"comfyrun {settings.role.value} listening on {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in signals:
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(sig)


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
    add_backends(settings, backend, comfy)
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
        for backend in settings.backends:  # read at start-up: a file missing is said now
            if backend.warmup_prompt is not None:
                load_prompt_file(backend.warmup_prompt)
        if settings.db_url:  # (the default database lives in the data dir, made at start)
            check_store_url(settings.db_url)
        if settings.output_url:
            open_output_storage(settings.output_url)  # (a storage is made, not opened)
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"cannot make the data dir {settings.data_dir}: {exc.strerror}"
            ) from None
    except (ValueError, FileNotFoundError, InvalidRequest) as exc:
        text = describe_invalid(exc, Settings) if isinstance(exc, ValidationError) else str(exc)
        console.print(f"[red]configuration error:[/red] {escape(text)}", soft_wrap=True)
        raise typer.Exit(2) from exc
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
            runner.run(_serve_forever(settings))
    except (CannotListen, StartupFailed) as exc:
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
    HTTP port serves /api/v2/health, /ready, /metrics, and GET /api/v2/backends with the
    admin's operations on them (drain, resume, restart, stop, start)."""
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


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(serve)
    app.command()(api)
    app.command()(worker)
