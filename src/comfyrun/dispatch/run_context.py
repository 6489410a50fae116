"""What every run of one dispatcher shares (`RunContext`), and what a run is given to place a
job's inputs (`InputPlacer`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from comfyrun.backends.pool import Backend, BackendPool
from comfyrun.core.job import JSON, Job
from comfyrun.dispatch.janitor import Janitor
from comfyrun.dispatch.relay import RelayHub
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.handlers.registry import HandlerRegistry
from comfyrun.outputs import OutputStorage
from comfyrun.store.base import JobStore

#: Places a job's inputs on a backend and returns the workflow to submit, plus a clean-up to run
#: once the job is done (e.g. removing files written into a managed backend's input folder).
InputPlacer = Callable[[Job, Backend, Any], Awaitable[tuple[JSON, Callable[[], Awaitable[None]]]]]


#: The error of a try whose prompt never reached ComfyUI (see JobRun._requeue_unsent).
UNSENT = "backend_unavailable"
#: The error of a try whose outputs ComfyUI named but no longer had (see RunEnding._succeed).
OUTPUT_MISSING = "output_missing"
#: The input the try after it adds to the nodes that named them, so that ComfyUI's cache (its
#: keys take every input) runs them anew: ComfyUI ignores an input its node does not declare.
RECACHE_INPUT = "comfyrun_recache"


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every run of one dispatcher shares."""

    store: JobStore
    pool: BackendPool
    storage: OutputStorage
    settings: DispatchSettings
    worker_id: str
    place_inputs: InputPlacer | None = None
    #: Told when this worker put a job back in the queue to run again at a given time, so that
    #: the claim loop wakes for it instead of waiting for its idle timeout.
    on_retry: Callable[[float], None] | None = None
    #: The live relay of ComfyUI messages (dispatch.relay): to an API in this process, and/or
    #: through the store to API nodes elsewhere.
    relay_hub: RelayHub | None = None
    relay_to_store: bool = False
    #: Runs the follow-up steps (`then`) of a job on its outputs (dispatch.chain).
    handlers: HandlerRegistry | None = None
    #: Removes ComfyUI's copies of stored outputs (dispatch.janitor); None keeps them.
    janitor: Janitor | None = None
    #: Told each job whose run here ended, as its final transition committed it (an API in
    #: this process keeps it at hand: JobService.remember).
    finished: list[Callable[[Job], None]] = dataclasses.field(default_factory=list)
    #: Told the id of each job whose run here is over, whether it settled the job or gave it
    #: back (its `?wait`s in this process stop waiting on the run: JobService.run_over).
    run_over: list[Callable[[str], None]] = dataclasses.field(default_factory=list)
    #: Told the id of each job a run here takes up (its `?wait`s in this process wait on that
    #: run from then on: JobService.run_started).
    run_started: list[Callable[[str], None]] = dataclasses.field(default_factory=list)


__all__ = ["OUTPUT_MISSING", "RECACHE_INPUT", "UNSENT", "InputPlacer", "RunContext"]
