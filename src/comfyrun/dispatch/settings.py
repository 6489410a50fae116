"""The dispatcher's settings: one frozen dataclass, built by comfyrun.config from the edge."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How a worker runs jobs. Times are seconds."""

    lease_s: float = 60.0  # a claim's lease; renewed every `heartbeat_s`
    heartbeat_s: float = 15.0
    idle_wait_s: float = 5.0  # longest wait for the store's "new work" wake-up
    progress_interval_s: float = 0.5  # progress snapshots are stored at most this often
    default_timeout_s: float | None = None  # per job, when the job sets none
    interrupt_grace_s: float = 15.0  # after an interrupt, before the backend is declared stuck
    cancel_grace_s: float = 10.0  # after a cancel's interrupt, before the job is marked canceled
    inline_max_bytes: int = 8 * 1024 * 1024  # cap for inline base64 outputs
    retention_s: float = 24 * 3600.0  # finished jobs expire (and lose their files) after this
    sweep_interval_s: float = 10.0  # leases and retention
    submit_timeout_s: float = 30.0  # POST /prompt and the other calls around a run
    #: Copying a finished prompt's outputs (GET /view from a remote backend) takes at most
    #: this long: a backend that sends a file slowly enough that no read times out (a few
    #: bytes a second) held its job running, and its slot, for ever.
    output_timeout_s: float = 600.0
    stop_grace_s: float = 5.0  # on stop(drain=False): time to interrupt and requeue jobs
    #: A run starts watching its job's log for a cancel this long after it starts: a short
    #: job ends before (no store reads spent on it), and a cancel that came meanwhile is in
    #: the log the watch reads first, so it is acted on then.
    cancel_watch_after_s: float = 0.05
    #: A run writes that its prompt waits in ComfyUI's queue, or has started, only when that
    #: is still so this long after it saw it (a job that ends first records its start with
    #: its end): the API may show a job held or started this much late.
    placement_note_after_s: float = 0.05
    #: Model-aware routing (core.affinity): a backend with room takes, among the first
    #: `model_routing_window` queued jobs of the best priority, one whose models it holds;
    #: a job is overtaken so at most `model_routing_max_overtake` times. Off: queue order.
    model_routing: bool = True
    model_routing_window: int = 32
    model_routing_max_overtake: int = 16
    #: Remove ComfyUI's copy of each output stored, from the folders comfyrun chose for a
    #: managed backend (dispatch.janitor), once its job's end is committed.
    clean_backend_outputs: bool = True
    #: Models of one folder (checkpoints, loras, ...) a backend is taken to keep loaded.
    models_kept: int = 1
    #: Claimed jobs one worker downloads model files for at once with no backend held
    #: (dispatch.staging); at this many it claims no other job that must download first.
    max_staging_jobs: int = 4
    #: Handler jobs (types other than comfy) one worker runs at once.
    handler_concurrency: int = 2
    #: After a cancel or a timeout sets a handler's cancel token, how long it gets to stop
    #: before its job ends anyway (a sync handler's thread cannot be killed: its result is
    #: then dropped).
    handler_stop_grace_s: float = 5.0


__all__ = ["DispatchSettings"]
