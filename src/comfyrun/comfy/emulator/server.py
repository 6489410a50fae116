"""The emulated ComfyUI server: aiohttp app, worker thread, and `start_emulator`."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from comfyrun.comfy.emulator import objectinfo
from comfyrun.comfy.emulator.config import EmulatorConfig
from comfyrun.comfy.emulator.executor import Executor, Outcome, Stopped
from comfyrun.comfy.emulator.faults import FROZEN_POLL_S, Faults
from comfyrun.comfy.emulator.files import Dirs
from comfyrun.comfy.emulator.hub import Hub
from comfyrun.comfy.emulator.nodes import annotated_exists
from comfyrun.comfy.emulator.promptqueue import PromptQueue
from comfyrun.comfy.validation import NodeDefs, validate_prompt
from comfyrun.core.origin import cross_origin

log = logging.getLogger(__name__)

COMFYUI_VERSION = "0.3.64"
FRONTEND_VERSION = "1.27.10"
TEMPLATES_VERSION = "0.1.95"
#: How long an exit fault waits for the answer to the POST /prompt that queued its prompt.
ANSWER_WAIT_S = 10.0
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
    "upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers",
    "model_patches", "audio_encoders",
]  # fmt: skip
EXTENSIONS = [
    "/extensions/core/groupNode.js",
    "/extensions/core/clipspace.js",
    "/extensions/core/widgetInputs.js",
    "/extensions/core/groupNodeManage.js",
    "/extensions/core/uploadImage.js",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Emulator:
    """One running emulated ComfyUI. `url` once started; `faults` may be changed at any time."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults: Faults = config.faults
        self.base_defs: NodeDefs = objectinfo.load_base()
        self.queue = PromptQueue(self._queue_changed)
        self.hub = Hub(self.queue.remaining, config.max_upload_size)
        self.executor = Executor(config, self.hub, self.faults, self.base_defs)
        self.executor.before_exit = self._wait_answered
        #: Prompts whose POST /prompt answer is not yet written (set when it is).
        self._answering: dict[str, threading.Event] = {}
        self.dirs = Dirs(config.input_dir, config.output_dir, config.temp_dir)
        self.number = 0
        #: prompts the worker is through with, its POST /free flags for the next read (tests
        #: wait for it: ComfyUI's history shows a prompt before its worker reads the flags)
        self.settled = 0
        self._settling = threading.Condition()
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._worker: threading.Thread | None = None
        self._defs: NodeDefs = {}
        self._defs_key: tuple[str, tuple[str, ...]] | None = None

    # ---- lifecycle ----
    def _queue_changed(self, remaining: int) -> None:
        self.hub.send_status(remaining)

    def _prepare_dirs(self) -> None:
        cfg = self.config
        for path in (cfg.output_dir, cfg.input_dir):
            path.mkdir(parents=True, exist_ok=True)
        if cfg.temp_dir.exists():
            shutil.rmtree(cfg.temp_dir, ignore_errors=True)
        cfg.temp_dir.mkdir(parents=True, exist_ok=True)

    async def start(self) -> None:
        self._prepare_dirs()
        await self.hub.start()
        app = self.build_app()
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.config.port
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.url = f"http://{host}:{self.port}"
        self._worker = threading.Thread(
            target=self._work, name="emulator-prompt-worker", daemon=True
        )
        self._worker.start()

    async def stop(self) -> None:
        self.executor.stopping.set()
        self.queue.close()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join, 10)
        await self.hub.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    def _work(self) -> None:
        while True:
            got = self.queue.get()
            if got is None:
                return
            item, task_id = got
            started = time.perf_counter()
            try:
                outcome = self.executor.execute(item)
            except Stopped:  # going away mid-prompt, as a killed ComfyUI does: nothing more
                return
            except Exception as ex:  # the emulator itself failed: record it, keep serving
                log.exception("emulator worker failed on prompt %s", item[1])
                error = {
                    "prompt_id": item[1],
                    "exception_message": str(ex),
                    "timestamp": int(time.time() * 1000),
                }
                outcome = Outcome(False, [["execution_error", error]])
            status = {
                "status_str": "success" if outcome.success else "error",
                "completed": outcome.success,
                "messages": outcome.messages,
            }
            self.queue.task_done(task_id, outcome.outputs, outcome.meta, status)
            log.info(
                "Prompt executed in %.2f seconds",
                time.perf_counter() - started,
                extra={
                    "action": "prompt_done",
                    "prompt_id": item[1],
                    "status": status["status_str"],
                },
            )
            client_id = item[3].get("client_id")
            if client_id is not None:
                self.hub.send_sync("executing", {"node": None, "prompt_id": item[1]}, client_id)
            flags = self.queue.get_flags()  # POST /free: after this prompt, as ComfyUI's worker
            free_memory = flags.get("free_memory", False)
            if flags.get("unload_models", free_memory):
                self.executor.unload_models()
            if free_memory:
                self.executor.reset()
            with self._settling:
                self.settled += 1
                self._settling.notify_all()

    def wait_settled(self, count: int, timeout: float) -> bool:
        """Block until the worker is through with `count` prompts (`settled`); False: not
        within `timeout` seconds."""
        with self._settling:
            return self._settling.wait_for(lambda: self.settled >= count, timeout)

    # ---- state the routes read ----
    def object_info(self) -> NodeDefs:
        """Definitions as of now; rebuilt only when the model lists or input files changed.
        Callers must not modify the result."""
        models = self.config.model_lists()
        images = objectinfo.input_files(self.config.input_dir, self.config.scans)
        key = (json.dumps(models, sort_keys=True), tuple(images))
        if self._defs_key != key:
            self._defs = objectinfo.build(self.base_defs, models, images)
            self._defs_key = key
        return self._defs

    def prompt_defs(self, prompt: Any) -> NodeDefs:
        """The definitions `validate_prompt` reads for `prompt`: those of its nodes' classes,
        with only their own model and image lists, read now (as ComfyUI asks `INPUT_TYPES()`
        of the prompt's nodes only). Callers must not modify the result."""
        cfg = self.config
        return objectinfo.defs_of(
            self.base_defs,
            objectinfo.prompt_classes(prompt),
            cfg.model_list,
            lambda: objectinfo.input_files(cfg.input_dir, cfg.scans),
        )

    def custom_validate(self, class_type: str, input_name: str, value: Any) -> bool | str:
        cfg = self.config
        if isinstance(value, str) and annotated_exists(
            cfg.input_dir, cfg.output_dir, cfg.temp_dir, value
        ):
            return True
        return f"Invalid image file: {value}"

    def interrupt(self, prompt_id: str | None = None) -> None:
        if prompt_id and prompt_id not in self.queue.running_ids():
            return
        self.executor.interrupt()

    async def drop_websockets(self) -> None:
        await self.hub.close_all()

    def build_app(self) -> web.Application:
        from comfyrun.comfy.emulator.routes import add_routes

        app = web.Application(
            client_max_size=self.config.max_upload_size,
            middlewares=[_origin_only, self._fault_middleware],
        )
        add_routes(app, self)
        return app

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # frozen: no answer until thawed (polled: `faults` is a plain object tests change)
        while self.faults.frozen and not request.path.startswith("/emulator/"):  # noqa: ASYNC110
            await asyncio.sleep(FROZEN_POLL_S)
        if self.faults.take_http_500(request.path):
            return web.Response(
                status=500, text="500 Internal Server Error\n\nServer got itself in trouble"
            )
        return await handler(request)

    # ---- POST /prompt ----
    async def post_prompt(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if "number" in json_data:
            number: float | int = float(json_data["number"])
        else:
            number = self.number
            if json_data.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        targets = json_data.get("partial_execution_targets")
        # on the event loop, as ComfyUI's `await execution.validate_prompt(...)` runs it (not
        # in a thread: a hop there and back, and a wait for the GIL while a prompt runs)
        defs = self.prompt_defs(prompt)
        verdict = validate_prompt(prompt, defs, self.custom_validate, targets)
        extra_data: dict[str, Any] = dict(json_data.get("extra_data") or {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not verdict.ok:
            log.warning("invalid prompt: %s", verdict.error)
            return web.json_response(
                {"error": verdict.error, "node_errors": verdict.node_errors}, status=400
            )
        log.info("got prompt", extra={"action": "got_prompt", "prompt_id": prompt_id})
        answered = self._answering[prompt_id] = threading.Event()
        try:
            self.queue.put([number, prompt_id, prompt, extra_data, verdict.outputs])
            response = web.json_response(
                {"prompt_id": prompt_id, "number": number, "node_errors": verdict.node_errors}
            )
            # written here, not after returning, so that `answered` means "on the wire"
            await response.prepare(request)
            await response.write_eof()
            return response
        finally:
            answered.set()
            self._answering.pop(prompt_id, None)

    def _wait_answered(self, prompt_id: str) -> None:
        """Block (the worker thread) until POST /prompt has answered for `prompt_id`."""
        answered = self._answering.get(prompt_id)
        if answered is not None:
            answered.wait(ANSWER_WAIT_S)

    def system_stats(self) -> dict[str, Any]:
        return {
            "system": {
                "os": "posix" if sys.platform != "win32" else "nt",
                "ram_total": 34359738368,
                "ram_free": 30064771072,
                "comfyui_version": COMFYUI_VERSION,
                "required_frontend_version": FRONTEND_VERSION,
                "installed_templates_version": TEMPLATES_VERSION,
                "required_templates_version": TEMPLATES_VERSION,
                "python_version": sys.version,
                "pytorch_version": "2.13.0+cpu (comfyrun emulator)",
                "embedded_python": False,
                "argv": list(self.config.argv),
            },
            "devices": [
                {
                    "name": "cpu",
                    "type": "cpu",
                    "index": None,
                    "vram_total": 34359738368,
                    "vram_free": 30064771072,
                    "torch_vram_total": 34359738368,
                    "torch_vram_free": 30064771072,
                }
            ],
        }

    def folder_paths(self) -> dict[str, list[str]]:
        root = str(self.config.models_dir) if self.config.models_dir else "models"
        return {name: [f"{root}/{name}"] for name in MODEL_FOLDERS}


@asynccontextmanager
async def start_emulator(config: EmulatorConfig) -> AsyncIterator[Emulator]:
    """Run an emulated ComfyUI for the duration of the `async with` block."""
    emulator = Emulator(config)
    try:
        await emulator.start()
        yield emulator
    finally:
        await emulator.stop()


@web.middleware
async def _origin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ComfyUI's origin check (server.py, create_origin_only_middleware): a request to a
    loopback host from a page of another origin is a 403 with no body; OPTIONS is answered
    empty."""
    host, origin = request.headers.get("Host"), request.headers.get("Origin")
    if host is not None and origin is not None and cross_origin(host, origin):
        return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)
