"""Wire models of the Comfy API v2 (and comfyrun's additive extensions), kept apart from the
core dataclasses. A core Job becomes the spec's Job object in one place: `job_to_wire`
(api.wire)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from comfyrun.core.fit import check_requirements
from comfyrun.core.job import JobStatus

#: The longest webhook URL taken, in every dialect.
MAX_WEBHOOK_URL = 2048

# requests -----------------------------------------------------------------------------------


class InputSpec(BaseModel):
    """One input file for the workflow: base64/data URI, a URL or an asset id."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=255)
    data: str | None = None
    url: str | None = Field(default=None, max_length=8192)
    asset_id: str | None = Field(default=None, max_length=255)
    node: str | None = Field(default=None, max_length=64)
    input: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _one_source(self) -> InputSpec:
        if sum(x is not None for x in (self.data, self.url, self.asset_id)) != 1:
            raise ValueError("an input needs exactly one of data, url or asset_id")
        if (self.node is None) != (self.input is None) and self.name is None:
            raise ValueError("an input targets a node with both `node` and `input`, or a `name`")
        return self


class OutputOptions(BaseModel):
    """How this job's outputs are delivered."""

    model_config = ConfigDict(extra="forbid")

    inline_base64: bool = Field(
        default=False, description="Also return each output inline (capped)."
    )
    keep_temp: bool = Field(default=False, description="Keep temp outputs (PreviewImage) too.")


class WebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(..., max_length=MAX_WEBHOOK_URL)
    secret: str | None = Field(default=None, max_length=512)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("webhook url must be http(s)")
        return value


class JobOptionsRequest(BaseModel):
    """The job options every way of submitting takes (comfyrun's extensions to the spec)."""

    model_config = ConfigDict(extra="ignore")

    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first.")
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    max_retries: int | None = Field(default=None, ge=0, le=20)
    retry_on_error: bool = Field(
        default=False, description="Retry node errors too (normally final)."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputSpec] = Field(default_factory=list, max_length=64)
    output: OutputOptions | None = None
    webhook: WebhookOptions | None = None
    extra_data: dict[str, Any] | None = None
    models: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=32,
        description="Model files the job needs: {url | asset_id, folder, name, hash?} each; "
        "fetched into comfyrun's model cache before the job runs.",
    )

    requirements: dict[str, Any] | None = Field(
        default=None,
        description="Backend labels the job needs: a value to equal, or {min, max, in}; "
        'e.g. {"gpu": "4090", "vram_gb": {"min": 16}}.',
    )

    @field_validator("requirements")
    @classmethod
    def _valid_requirements(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_requirements(value) or None  # RequirementError is a ValueError: 422

    def options(self) -> dict[str, Any]:
        """The options a worker reads from the job record."""
        out = self.output or OutputOptions()
        opts: dict[str, Any] = {
            "return_base64": out.inline_base64,
            "keep_temp_outputs": out.keep_temp,
        }
        if self.retry_on_error:
            opts["retry_on_error"] = True
        if self.extra_data:
            opts["extra_data"] = self.extra_data
        if self.webhook is not None:
            opts["webhook"] = self.webhook.model_dump(exclude_none=True)
        if self.models:
            opts["models"] = self.models
        if self.requirements:
            opts["requirements"] = self.requirements
        return opts


class ChainStepRequest(BaseModel):
    """One follow-up step of a job: a handler run on the job's outputs (comfyrun.handlers)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(..., max_length=64, description="A handler's job type, e.g. image")
    params: dict[str, Any] = Field(default_factory=dict)
    outputs: Literal["replace", "join"] = Field(
        default="replace", description="The step's outputs replace the job's, or join them."
    )


class SubmitJobRequest(JobOptionsRequest):
    """POST /api/v2/jobs. `workflow` is the spec's field; the rest are comfyrun extensions."""

    workflow: dict[str, Any] | None = Field(
        default=None, description="API-format prompt (UI format is converted); comfy jobs"
    )
    type: str = Field(
        default="comfy",
        max_length=64,
        description="The job's handler: comfy (a ComfyUI workflow, the default), image, "
        "ffmpeg, or one a plug-in registers",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="The handler's parameters (jobs of other types)"
    )
    then: list[ChainStepRequest] | None = Field(
        default=None, max_length=8, description="Follow-up steps run on the job's outputs"
    )

    @model_validator(mode="after")
    def _payload(self) -> SubmitJobRequest:
        if self.type == "comfy" and self.workflow is None:
            raise ValueError("a comfy job needs a `workflow`")
        if self.type != "comfy" and self.workflow is not None:
            raise ValueError(f"a job of type {self.type!r} takes `params`, not a `workflow`")
        return self

    def options(self) -> dict[str, Any]:
        opts = super().options()
        if self.then:
            opts["then"] = [step.model_dump() for step in self.then]
        return opts


# responses ----------------------------------------------------------------------------------


class ProgressOut(BaseModel):
    value: float
    nodes_done: int
    nodes_total: int
    current_node: str | None = None
    current_node_class: str | None = None
    step: int | None = None
    steps: int | None = None
    message: str | None = None


class OutputOut(BaseModel):
    node_id: str
    name: str
    type: str
    content_type: str
    size_bytes: int
    id: str
    hash: str | None
    url: str
    url_expires_at: str
    job_id: str | None = None
    data_base64: str | None = None
    text: str | None = None


class JobErrorOut(BaseModel):
    code: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    traceback: str | None = None
    details: Any = None


class JobUrls(BaseModel):
    self: str
    events: str
    cancel: str


class JobOut(BaseModel):
    """The spec's Job, plus comfyrun's fields (priority, attempts, backend, metadata)."""

    id: str
    status: JobStatus
    created_at: str
    started_at: str | None
    completed_at: str | None
    expires_at: str
    queue_position: int | None
    progress: ProgressOut | None
    outputs: list[OutputOut]
    error: JobErrorOut | None
    metrics: dict[str, int | None]
    urls: JobUrls
    priority: int = 0
    attempts: int = 0
    max_retries: int = 0
    backend: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    type: str = "comfy"


class JobList(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class BackendOut(BaseModel):
    name: str
    url: str | None
    state: str
    inflight: int
    jobs_done: int
    #: what is wrong with it now (cleared once it is ready again and answered a probe)
    last_error: str | None
    managed: bool
    log_tail: list[str] = Field(default_factory=list)
    #: when `last_error` was first seen (ISO 8601; null with it)
    last_error_at: str | None = None
    #: takes no new job: drained by an admin, or stopping/restarting once its jobs are done
    draining: bool = False
    #: a managed backend an admin stopped: no job starts it until `start` or `resume`
    kept_stopped: bool = False
    #: the prompts it may hold now: one running, the rest in ComfyUI's queue (2; up to 4 while
    #: its prompts run shorter than comfyrun's round trip to send the next)
    depth: int = 2


class BackendList(BaseModel):
    backends: list[BackendOut]


class StatsOut(BaseModel):
    counts: dict[str, int]
    queue_depth: int
    running: int
    oldest_queued_age_s: float | None


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    role: str


class ReadyOut(BaseModel):
    ready: bool
    store: bool
    backends_ready: int
    reason: str | None = None
    #: the jobs queued, where `ready_queue_max` is set (else not counted: None)
    queued: int | None = None


class CleanupOut(BaseModel):
    expired: int
    deleted: int
    files_deleted: int


class ResetStuckOut(BaseModel):
    requeued: list[str]


__all__ = [
    "BackendList",
    "BackendOut",
    "CleanupOut",
    "ErrorEnvelope",
    "HealthOut",
    "InputSpec",
    "JobList",
    "JobOptionsRequest",
    "JobOut",
    "OutputOptions",
    "ReadyOut",
    "ResetStuckOut",
    "StatsOut",
    "SubmitJobRequest",
    "WebhookOptions",
]
