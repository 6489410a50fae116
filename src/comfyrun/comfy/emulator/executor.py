"""Runs one prompt at a time on the worker thread, sending ComfyUI's messages in its order.

Per prompt: execution_start, execution_cached, then per node progress_state(running),
executing, the node, executed (output nodes), progress_state(finished); at the end
execution_success, or execution_error / execution_interrupted. Cached output nodes re-send
their old `executed` without running. Interrupts are cooperative: checked when a node starts
and on every sampler step.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from comfyrun.comfy.emulator.config import EmulatorConfig
from comfyrun.comfy.emulator.faults import FROZEN_POLL_S, Faults
from comfyrun.comfy.emulator.graph import ExecutionOrder, signatures
from comfyrun.comfy.emulator.hub import Hub
from comfyrun.comfy.emulator.nodes import (
    NODES,
    EmulatedError,
    NodeResult,
    NotImplementedNode,
    file_hash,
)
from comfyrun.comfy.emulator.nodes.base import annotated_path
from comfyrun.comfy.emulator.nodes.model import MODEL_LOADERS
from comfyrun.comfy.emulator.promptqueue import QueueItem
from comfyrun.comfy.validation import NodeDefs, full_type_name, is_link

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Processing interrupted (ComfyUI's InterruptProcessingException)."""


class Stopped(BaseException):
    """The emulator is stopping. A ComfyUI process that goes away says nothing more about the
    prompt it ran (no `execution_interrupted`, no history): neither does the emulator. A
    BaseException, so no node's error handling takes it for the node's own failure."""


@dataclass
class _CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


@dataclass
class Outcome:
    success: bool
    messages: list[list[Any]]
    outputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool | str):
        return value
    if isinstance(value, np.ndarray):
        return f"array(shape={list(value.shape)}, dtype={value.dtype})"
    return str(value)


class _Progress:
    """ComfyUI's progress registry for one prompt: every message carries all started nodes."""

    def __init__(self, hub: Hub, prompt_id: str, client_id: str | None) -> None:
        self.hub, self.prompt_id, self.client_id = hub, prompt_id, client_id
        self.nodes: dict[str, dict[str, Any]] = {}

    def _state(self, node_id: str, value: float, maximum: float, state: str) -> dict[str, Any]:
        return {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    def _send(self) -> None:
        nodes = {k: dict(v) for k, v in self.nodes.items()}
        self.hub.send_sync(
            "progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.client_id
        )

    def start(self, node_id: str) -> None:
        self.nodes[node_id] = self._state(node_id, 0.0, 1.0, "running")
        self._send()

    def update(self, node_id: str, value: int, maximum: int) -> None:
        self.nodes[node_id] = self._state(node_id, value, maximum, "running")
        self._send()

    def finish(self, node_id: str) -> None:
        if node_id in self.nodes:
            current = self.nodes[node_id]
            self.nodes[node_id] = self._state(node_id, current["max"], current["max"], "finished")
        else:
            self.nodes[node_id] = self._state(node_id, 1, 1, "finished")
        self._send()


class _Context:
    """The NodeContext handed to node functions."""

    def __init__(self, executor: Executor, run: _Run, node_id: str) -> None:
        self._executor, self._run, self.node_id = executor, run, node_id
        cfg = executor.config
        self.prompt = run.prompt
        self.extra_data = run.extra_data
        self.output_dir, self.input_dir, self.temp_dir = cfg.output_dir, cfg.input_dir, cfg.temp_dir
        self.models_dir = cfg.models_dir
        self.step_time_s = cfg.step_time_s

    def check_interrupt(self) -> None:
        self._executor.check_interrupt()

    def model_path(self, folder: str, name: str) -> Path | None:
        return self._executor.config.model_path(folder, name)

    def load_model(self, folder: str, name: str) -> None:
        seconds = self._executor.load_time(folder, name)
        if seconds > 0:
            self.sleep(seconds)

    def sleep(self, seconds: float) -> None:
        total = seconds + self._executor.faults.delay_s
        if total > 0:
            self._executor.stopping.wait(total)

    def progress(self, value: int, total: int, preview: Image.Image | None = None) -> None:
        ex, run = self._executor, self._run
        ex.wait_thawed()
        ex.check_interrupt()
        run.progress.update(self.node_id, value, total)
        jpeg = None
        if preview is not None and ex.config.previews_enabled:
            buffer = io.BytesIO()
            preview.convert("RGB").save(buffer, format="JPEG", quality=95)
            jpeg = buffer.getvalue()
            meta = {
                "node_id": self.node_id,
                "prompt_id": run.prompt_id,
                "display_node_id": self.node_id,
                "parent_node_id": None,
                "real_node_id": self.node_id,
                "image_type": "image/jpeg",
            }
            ex.hub.send_preview(jpeg, meta, run.client_id, with_metadata=True)
        data = {"value": value, "max": total, "prompt_id": run.prompt_id, "node": self.node_id}
        ex.hub.send_sync("progress", data, run.client_id)
        if jpeg is not None:
            ex.hub.send_preview(jpeg, {}, run.client_id, with_metadata=False)

    def send_text(self, text: str) -> None:
        self._executor.hub.send_text(self.node_id, text)

    def node_state(self) -> dict[str, Any]:
        return self._executor.node_states.setdefault(self.node_id, {})


@dataclass
class _Run:
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    client_id: str | None
    progress: _Progress
    messages: list[list[Any]] = field(default_factory=list)
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)


class _NodeFailure(Exception):
    def __init__(self, node_id: str, error: BaseException, inputs: dict[str, Any]) -> None:
        super().__init__(str(error))
        self.node_id, self.error, self.inputs = node_id, error, inputs


class Executor:
    def __init__(self, config: EmulatorConfig, hub: Hub, faults: Faults, defs: NodeDefs) -> None:
        self.config, self.hub, self.faults, self.defs = config, hub, faults, defs
        self.interrupt_flag = threading.Event()
        self.stopping = threading.Event()
        self.node_states: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, _CacheEntry] = {}
        self._loaded: list[tuple[str, str]] = []  # models in memory, most recent last
        #: Called with the prompt id before an exit fault ends the process; the server waits
        #: there until its answer to POST /prompt is on the wire, as ComfyUI's would be by the
        #: time a real node crashed it (otherwise the client sometimes sees no 200 at all).
        self.before_exit: Callable[[str], None] = lambda _prompt_id: None

    def unload_models(self) -> None:
        """ComfyUI's unload_all_models: the next use of each model loads it again."""
        self._loaded.clear()

    def _unload_after_prompt(self, prompt: dict[str, Any], ran: list[str]) -> None:
        """ComfyUI's --disable-smart-memory: every model is unloaded at the end of each prompt,
        after its last node (and `execution_success`), before its history is written and its
        `executing` null sent; `unload_s` of simulated time per model in memory, those of the
        prompt's loaders included (run or cached: ComfyUI loads a cached loader's model again
        to use it, load time the emulator does not simulate)."""
        models = set(self._loaded)
        for node_id in ran:
            loader = MODEL_LOADERS.get(prompt[node_id].get("class_type", ""))
            name = prompt[node_id].get("inputs", {}).get(loader[1]) if loader else None
            if loader is not None and isinstance(name, str):
                models.add((loader[0], name))
        self.unload_models()
        if models and self.config.unload_s > 0:
            self.stopping.wait(self.config.unload_s * len(models))

    def reset(self) -> None:
        """ComfyUI's PromptExecutor.reset: the execution cache is dropped (an identical prompt
        runs again, writing new files)."""
        self._cache = {}

    def load_time(self, folder: str, name: str) -> float:
        """Simulated seconds to load a model (0 when it is in memory); it is then in memory,
        and the least recently used of its folder beyond `loaded_models_max` are unloaded."""
        cfg, key = self.config, (folder, name)
        if key in self._loaded:
            self._loaded.remove(key)
            self._loaded.append(key)
            return 0.0
        self._loaded.append(key)
        same = [k for k in self._loaded if k[0] == folder]
        for old in same[: max(0, len(same) - cfg.loaded_models_max)]:
            self._loaded.remove(old)
        if cfg.load_s_per_file <= 0 and cfg.load_s_per_gb <= 0:
            return 0.0
        path = cfg.model_path(folder, name)
        size_gb = path.stat().st_size / 1e9 if path is not None else 0.0
        return cfg.load_s_per_file + cfg.load_s_per_gb * size_gb

    def interrupt(self) -> None:
        self.interrupt_flag.set()

    def wait_thawed(self) -> None:
        """Pause while the emulator is frozen (the `freeze` fault), as a stopped process does."""
        while self.faults.frozen and not self.stopping.is_set():
            self.stopping.wait(FROZEN_POLL_S)

    def check_interrupt(self) -> None:
        if self.stopping.is_set():
            raise Stopped
        if self.interrupt_flag.is_set():
            self.interrupt_flag.clear()
            raise Interrupted("Processing interrupted")

    def _is_output(self, prompt: dict[str, Any], node_id: str) -> bool:
        return bool(self.defs.get(prompt[node_id]["class_type"], {}).get("output_node"))

    def _is_changed(self, prompt: dict[str, Any], node_id: str) -> Any:
        node = prompt[node_id]
        if node.get("class_type") in ("LoadImage", "LoadImageMask"):
            name = node.get("inputs", {}).get("image")
            if isinstance(name, str):
                cfg = self.config
                return file_hash(annotated_path(name, cfg.input_dir, cfg.output_dir, cfg.temp_dir))
        return None

    def execute(self, item: QueueItem) -> Outcome:
        _number, prompt_id, prompt, extra_data, outputs = item
        self.interrupt_flag.clear()
        client_id = extra_data.get("client_id")
        self.hub.client_id = client_id
        run = _Run(
            prompt_id, prompt, extra_data, client_id, _Progress(self.hub, prompt_id, client_id)
        )
        self._message(run, "execution_start", {"prompt_id": prompt_id}, broadcast=False)
        sigs = signatures(prompt, lambda n: self._is_changed(prompt, n))
        wanted = set(sigs.values())
        self._cache = {k: v for k, v in self._cache.items() if k in wanted}
        cached = [n for n in prompt if sigs[n] in self._cache]
        self._message(
            run, "execution_cached", {"nodes": cached, "prompt_id": prompt_id}, broadcast=False
        )
        order = ExecutionOrder(
            prompt, lambda n: self._is_output(prompt, n), lambda n: sigs[n] in self._cache
        )
        for output in outputs:
            order.add_node(output)
        success = True
        while not order.is_empty():
            node_id = order.next()
            try:
                self._run_node(run, node_id, sigs)
            except _NodeFailure as failure:
                success = False
                self._report_failure(run, failure, sigs)
                break
            order.complete(node_id)
            if node_id not in run.executed:
                run.executed.append(node_id)
        if success:
            self._message(run, "execution_success", {"prompt_id": prompt_id}, broadcast=False)
        self.hub.last_node_id = None
        if self.config.disable_smart_memory:  # as ComfyUI's execute, before its history is written
            self._unload_after_prompt(prompt, [*run.executed, *cached])
        meta = {
            n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
            for n in run.ui
        }
        return Outcome(success, run.messages, dict(run.ui), meta)

    def _message(self, run: _Run, event: str, data: dict[str, Any], *, broadcast: bool) -> None:
        data = {**data, "timestamp": _now_ms()}
        run.messages.append([event, data])
        if run.client_id is not None or broadcast:
            self.hub.send_sync(event, data, run.client_id)

    def _input_values(self, run: _Run, node_id: str, sigs: dict[str, str]) -> dict[str, Any]:
        declared = self._declared(run.prompt[node_id]["class_type"])
        values: dict[str, Any] = {}
        for name, value in run.prompt[node_id]["inputs"].items():
            if not is_link(value) and declared is not None and name not in declared:
                continue  # as ComfyUI's get_input_data: a value no input declares is dropped
            if is_link(value):
                source = run.values.get(value[0])
                if source is None:
                    source = self._cache[sigs[value[0]]].outputs
                values[name] = source[value[1]]
            else:
                values[name] = value
        return values

    def _declared(self, class_type: str) -> set[str] | None:
        """The inputs a node type declares (required, optional, hidden); None if unknown."""
        spec = self.defs.get(class_type, {}).get("input")
        if not isinstance(spec, dict):
            return None
        return {name for part in spec.values() if isinstance(part, dict) for name in part}

    def _apply_faults(self, prompt_id: str, node_id: str, class_type: str) -> None:
        faults = self.faults
        self.wait_thawed()
        if class_type in faults.exit_class_types:
            self.before_exit(prompt_id)
            log.warning("fault injection: exiting the process at node %s (%s)", node_id, class_type)
            os._exit(faults.exit_class_types[class_type])
        if class_type in faults.drop_ws_class_types:
            self.hub.drop_all()
        if faults.delay_s > 0:
            self.stopping.wait(faults.delay_s)
        # a hang lasts until the prompt is interrupted or the fault is cleared
        while faults.hang and not self.stopping.is_set() and not self.interrupt_flag.is_set():
            self.interrupt_flag.wait(0.05)
        fault = faults.node_fault(node_id, class_type)
        if fault is not None:
            raise EmulatedError(fault.exception_type, fault.message)

    def _run_node(self, run: _Run, node_id: str, sigs: dict[str, str]) -> None:
        class_type = run.prompt[node_id]["class_type"]
        entry = self._cache.get(sigs[node_id])
        if entry is not None:
            if run.client_id is not None:
                data = {
                    "node": node_id,
                    "display_node": node_id,
                    "output": entry.ui,
                    "prompt_id": run.prompt_id,
                }
                self.hub.send_sync("executed", data, run.client_id)
            run.progress.finish(node_id)
            run.values[node_id] = entry.outputs
            if entry.ui is not None:
                run.ui[node_id] = entry.ui
            return
        run.progress.start(node_id)
        if run.client_id is not None:
            self.hub.last_node_id = node_id
            data = {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id}
            self.hub.send_sync("executing", data, run.client_id)
        inputs: dict[str, Any] = {}
        try:
            inputs = self._input_values(run, node_id, sigs)
            self._apply_faults(run.prompt_id, node_id, class_type)
            self.check_interrupt()
            fn = NODES.get(class_type)
            if fn is None:
                raise NotImplementedNode(class_type)
            result: NodeResult = fn(_Context(self, run, node_id), **inputs)
        except Exception as ex:
            raise _NodeFailure(node_id, ex, inputs) from ex
        self._cache[sigs[node_id]] = _CacheEntry(tuple(result.outputs), result.ui)
        run.values[node_id] = tuple(result.outputs)
        if result.ui:
            run.ui[node_id] = result.ui
            if run.client_id is not None:
                data = {
                    "node": node_id,
                    "display_node": node_id,
                    "output": result.ui,
                    "prompt_id": run.prompt_id,
                }
                self.hub.send_sync("executed", data, run.client_id)
        run.progress.finish(node_id)

    def _report_failure(self, run: _Run, failure: _NodeFailure, sigs: dict[str, str]) -> None:
        node_id, error = failure.node_id, failure.error
        class_type = run.prompt[node_id]["class_type"]
        if isinstance(error, Interrupted):
            data = {
                "prompt_id": run.prompt_id,
                "node_id": node_id,
                "node_type": class_type,
                "executed": list(run.executed),
            }
            self._message(run, "execution_interrupted", data, broadcast=True)
            return
        if isinstance(error, EmulatedError):
            exception_type = error.type_name
        else:
            exception_type = full_type_name(type(error))
        log.error("!!! Exception during processing !!! %s", error)
        current_outputs = [n for n in run.prompt if sigs[n] in self._cache]
        data = {
            "prompt_id": run.prompt_id,
            "node_id": node_id,
            "node_type": class_type,
            "executed": list(run.executed),
            "exception_message": str(error),
            "exception_type": exception_type,
            "traceback": traceback.format_tb(error.__traceback__),
            "current_inputs": {k: [_format_value(v)] for k, v in failure.inputs.items()},
            "current_outputs": current_outputs,
        }
        self._message(run, "execution_error", data, broadcast=False)
