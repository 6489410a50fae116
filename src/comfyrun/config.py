"""comfyrun's settings: the only module that reads the environment.

Sources, strongest first: explicit values (CLI flags), environment variables (`COMFYRUN_*`, plus
the names users of older ComfyUI wrappers already type), a TOML file (`--config` or
`COMFYRUN_CONFIG`), then the defaults below.

A TOML file looks like::

    data_dir = "/var/lib/comfyrun"
    db_url = "postgresql://comfyrun@db/comfyrun"
    queue_max = 5000
    api_keys = ["secret-token"]

    [[backends]]
    url = "http://gpu-1:8188"

    [[backends]]
    name = "local"
    comfy_path = "/opt/ComfyUI"
    extra_args = ["--extra-model-paths-config", "/opt/models.yaml"]
    env = { CUDA_VISIBLE_DEVICES = "0" }

Accepted legacy names: COMFYUI_SERVER_ADDRESS (one backend, `host:port` or a URL),
DEFAULT_TIMEOUT (per-job timeout, seconds), SQLITE_DB_PATH (a SQLite file), COMFY_PATH (a
managed ComfyUI folder), COMFY_PORT (its port), WEBSOCKET_RECONNECT_ATTEMPTS, API_KEY.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from comfyrun.config_backends import BackendConfig, check_backend_names, normalise_backend_url
from comfyrun.config_check import check_config_keys
from comfyrun.core.queue_order import QueueOrder

CONFIG_ENV = "COMFYRUN_CONFIG"


class Role(enum.StrEnum):
    """What a comfyrun process does: `serve` = API + worker, `api` = HTTP only, `worker` = the
    dispatcher only (with health and metrics endpoints)."""

    SERVE = "serve"
    API = "api"
    WORKER = "worker"


def add_backends(settings: Settings, urls: list[str] | None, paths: list[Path] | None) -> None:
    """Backends given on the command line (`--backend URL`, `--comfy PATH`) after the
    configured ones; ValueError for a URL no ComfyUI can be at or a name taken twice."""
    extra = [BackendConfig(url=u) for u in urls or []]
    extra += [BackendConfig(comfy_path=p) for p in paths or []]
    if extra:
        settings.backends = [*settings.backends, *extra]
        check_backend_names(settings.backends)


def _aliases(name: str, *legacy: str) -> AliasChoices:
    return AliasChoices(f"COMFYRUN_{name.upper()}", *legacy)


class Settings(BaseSettings):
    """Everything comfyrun can be told. Read once, at the edge (CLI or the app factory's caller)."""

    model_config = SettingsConfigDict(
        env_prefix="COMFYRUN_",
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
    )

    # where things live
    data_dir: Path = Field(default=Path("var"), validation_alias=_aliases("data_dir"))
    db_url: str | None = Field(default=None, validation_alias=_aliases("db_url", "SQLITE_DB_PATH"))
    output_url: str | None = Field(default=None, validation_alias=_aliases("output_url"))
    #: workflow templates: NAME.json (+ NAME.params.json) files, served at /api/v2/workflows
    workflows_dir: Path | None = Field(default=None, validation_alias=_aliases("workflows_dir"))
    #: ComfyUI's web editor, served at /: a built frontend (a folder holding its index.html);
    #: default the pinned comfyui-frontend-package's. Users' editor files: <data_dir>/user.
    frontend_root: Path | None = Field(default=None, validation_alias=_aliases("frontend_root"))

    # the HTTP server
    host: str = Field(default="127.0.0.1", validation_alias=_aliases("host"))
    port: int = Field(default=8189, ge=0, le=65535, validation_alias=_aliases("port"))
    public_url: str | None = Field(default=None, validation_alias=_aliases("public_url"))
    role: Role = Field(default=Role.SERVE, validation_alias=_aliases("role"))
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("api_keys")
    )
    api_key: str | None = Field(default=None, validation_alias=_aliases("api_key", "API_KEY"))
    #: Browser origins (scheme://host[:port]) let through ComfyUI's origin check (api/origin.py)
    #: to a server on loopback; "*" lifts the check.
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("allowed_origins")
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, validation_alias=_aliases("max_request_bytes")
    )
    #: File uploads (`POST /api/v2/assets`, ComfyUI's `/upload/image`) have their own limit.
    max_upload_bytes: int = Field(
        default=1024 * 1024 * 1024, gt=0, validation_alias=_aliases("max_upload_bytes")
    )
    #: A request body that sends nothing for this long, or is not complete within
    #: body_timeout_s, is refused with 408 and its connection closed.
    body_idle_timeout_s: float = Field(
        default=15.0, gt=0, validation_alias=_aliases("body_idle_timeout_s")
    )
    body_timeout_s: float = Field(default=300.0, gt=0, validation_alias=_aliases("body_timeout_s"))
    #: The request line and headers together (the HTTP server refuses more).
    max_header_bytes: int = Field(
        default=64 * 1024, gt=0, validation_alias=_aliases("max_header_bytes")
    )
    #: A request line and headers not all received this long after their first byte: 408.
    header_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias=_aliases("header_timeout_s")
    )
    #: How long an idle kept-alive connection stays open. Longer than the idle timeouts of the
    #: proxies and clients in front (nginx and load balancers use 60 s, httpx 5 s): a server
    #: that closes first races a client sending its next request on that connection, which
    #: then fails unanswered (uvicorn's default was 5 s, the same as httpx's).
    keep_alive_s: int = Field(default=75, gt=0, validation_alias=_aliases("keep_alive_s"))
    max_wait_s: float = Field(default=300.0, ge=0, validation_alias=_aliases("max_wait_s"))
    #: a job's (or batch's) client `metadata`, in bytes of compact JSON (422 past it)
    metadata_max_bytes: int = Field(
        default=16 * 1024, gt=0, validation_alias=_aliases("metadata_max_bytes")
    )
    #: `queue_position` counts at most this many jobs ahead (a job further back reads this
    #: number): counting costs what it counts, on every submit, GET and SSE look at a queued
    #: job, and at the back of a long queue it held the store for milliseconds a time.
    queue_position_cap: int = Field(
        default=1000, ge=1, validation_alias=_aliases("queue_position_cap")
    )
    sse_keepalive_s: float = Field(default=15.0, validation_alias=_aliases("sse_keepalive_s"))

    # backends
    backends: Annotated[list[BackendConfig], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("backends")
    )
    comfyui_server_address: str | None = Field(
        default=None, validation_alias=_aliases("comfyui_server_address", "COMFYUI_SERVER_ADDRESS")
    )
    comfy_path: Path | None = Field(
        default=None, validation_alias=_aliases("comfy_path", "COMFY_PATH")
    )
    comfy_port: int | None = Field(
        default=None, validation_alias=_aliases("comfy_port", "COMFY_PORT")
    )
    comfy_python: str | None = Field(
        default=None, validation_alias=_aliases("comfy_python", "COMFY_PYTHON")
    )
    emulators: int = Field(default=0, ge=0, validation_alias=_aliases("emulators"))
    emulator_mode: Literal["process", "inprocess"] = Field(
        default="process", validation_alias=_aliases("emulator_mode")
    )
    emulator_step_time_s: float = Field(
        default=0.0, validation_alias=_aliases("emulator_step_time_s")
    )
    websocket_reconnect_attempts: int = Field(
        default=10,
        validation_alias=_aliases("websocket_reconnect_attempts", "WEBSOCKET_RECONNECT_ATTEMPTS"),
    )
    backend_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias=_aliases("backend_timeout_s")
    )
    output_timeout_s: float = Field(
        default=600.0, gt=0, validation_alias=_aliases("output_timeout_s")
    )

    # the queue
    queue_max: int | None = Field(default=10_000, ge=1, validation_alias=_aliases("queue_max"))
    queue_full_retry_after_s: int = Field(
        default=5, validation_alias=_aliases("queue_full_retry_after_s")
    )
    #: /ready answers 503 while this many jobs or more wait in the queue (None: never), for a
    #: load balancer to send new work to another comfyrun (each with a queue of its own)
    ready_queue_max: int | None = Field(
        default=None, ge=1, validation_alias=_aliases("ready_queue_max")
    )
    #: Order within one priority (and fair turn): "longest_first" starts the job estimated to
    #: run longest among those waiting together, so a fleet finishes a burst of mixed jobs
    #: close to the best makespan; no job is overtaken by one submitted more than queue_aging_s
    #: after it. "fifo": submission order. (comfyrun.core.queue_order)
    queue_order: QueueOrder = Field(
        default=QueueOrder.LONGEST_FIRST, validation_alias=_aliases("queue_order")
    )
    queue_aging_s: float = Field(default=60.0, ge=0, validation_alias=_aliases("queue_aging_s"))
    #: `serve`: a job submitted while a backend is idle and nothing is queued is claimed for
    #: that backend in its enqueue's own transaction (comfyrun.dispatch.handoff).
    hand_off: bool = Field(default=True, validation_alias=_aliases("hand_off"))
    #: Remove ComfyUI's copy of each output once comfyrun stored it, from the output and temp
    #: folders comfyrun chose for a managed backend (comfyrun.dispatch.janitor).
    clean_backend_outputs: bool = Field(
        default=True, validation_alias=_aliases("clean_backend_outputs")
    )
    #: GET /metrics without a key even when the server has API keys (its series then leave
    #: the keys out: they name every tenant). By default, with keys, it needs an admin key.
    metrics_public: bool = Field(default=False, validation_alias=_aliases("metrics_public"))
    default_timeout_s: float | None = Field(
        default=None, gt=0, validation_alias=_aliases("default_timeout_s", "DEFAULT_TIMEOUT")
    )
    default_max_retries: int = Field(
        default=2, ge=0, validation_alias=_aliases("default_max_retries")
    )
    retry_delay_s: float = Field(default=2.0, ge=0, validation_alias=_aliases("retry_delay_s"))
    retention_hours: float = Field(default=24.0, gt=0, validation_alias=_aliases("retention_hours"))
    lease_s: float = Field(default=30.0, gt=0, validation_alias=_aliases("lease_s"))
    heartbeat_s: float = Field(default=10.0, gt=0, validation_alias=_aliases("heartbeat_s"))
    sweep_interval_s: float = Field(
        default=5.0, gt=0, validation_alias=_aliases("sweep_interval_s")
    )
    worker_id: str | None = Field(default=None, validation_alias=_aliases("worker_id"))
    #: The server's event loop: uvloop where installed ("auto"), or the standard one.
    event_loop: Literal["auto", "asyncio"] = Field(
        default="auto", validation_alias=_aliases("event_loop")
    )
    inline_output_max_bytes: int = Field(
        default=8 * 1024 * 1024, validation_alias=_aliases("inline_output_max_bytes")
    )
    object_info_ttl_s: float = Field(default=300.0, validation_alias=_aliases("object_info_ttl_s"))

    # webhooks (private and loopback targets are refused unless allowed here: CIDRs or hosts)
    webhook_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("webhook_allow")
    )
    webhook_secret: str | None = Field(default=None, validation_alias=_aliases("webhook_secret"))
    # delivery: retried after base, 2·base, 4·base … (at most max_delay) for max_age_hours
    webhook_retry_base_s: float = Field(
        default=1.0, gt=0, validation_alias=_aliases("webhook_retry_base_s")
    )
    webhook_retry_max_delay_s: float = Field(
        default=3600.0, gt=0, validation_alias=_aliases("webhook_retry_max_delay_s")
    )
    webhook_max_age_hours: float = Field(
        default=24.0, gt=0, validation_alias=_aliases("webhook_max_age_hours")
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, validation_alias=_aliases("webhook_timeout_s")
    )
    webhook_poll_s: float = Field(default=1.0, gt=0, validation_alias=_aliases("webhook_poll_s"))

    # URL inputs and model downloads: private/loopback addresses they may reach (CIDRs or hosts)
    fetch_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("fetch_allow")
    )
    # model-aware routing: a backend takes a queued job whose models it holds (core.affinity)
    model_routing: bool = Field(default=True, validation_alias=_aliases("model_routing"))
    model_routing_window: int = Field(
        default=32, ge=1, validation_alias=_aliases("model_routing_window")
    )
    model_routing_max_overtake: int = Field(
        default=16, ge=0, validation_alias=_aliases("model_routing_max_overtake")
    )
    # the model cache (files jobs bring with `models`)
    model_cache_gb: float | None = Field(
        default=200.0, gt=0, validation_alias=_aliases("model_cache_gb")
    )
    model_max_gb: float = Field(default=64.0, gt=0, validation_alias=_aliases("model_max_gb"))
    model_fetch_timeout_s: float = Field(
        default=3600.0, gt=0, validation_alias=_aliases("model_fetch_timeout_s")
    )
    #: Tries of one model URL: a transient failure (connection cut, no byte for
    #: fetch_idle_timeout_s, HTTP 408/429/5xx) is tried again after a backoff, resuming with a
    #: Range request where the server allows; 1: never tried again.
    model_fetch_attempts: int = Field(
        default=3, ge=1, le=20, validation_alias=_aliases("model_fetch_attempts")
    )
    #: Claimed jobs a worker downloads model files for at once, no backend held meanwhile
    #: (dispatch.staging); at this many it claims no other job that must download first. Each
    #: claim in flight holds a place (it may take such a job): a claim beyond them chooses among
    #: a window of queued jobs, a costlier claim (PostgreSQL: five round trips, not one), so the
    #: default is as many as a PostgreSQL worker's claims in flight (dispatch.dispatcher).
    max_staging_jobs: int = Field(
        default=4, ge=1, le=64, validation_alias=_aliases("max_staging_jobs")
    )
    #: A URL input or model URL that sends nothing this long (no answer, or a body that stops
    #: coming) is given up (`timeout`), however long its fetch may take in all.
    fetch_idle_timeout_s: float = Field(
        default=60.0, gt=0, validation_alias=_aliases("fetch_idle_timeout_s")
    )

    # job types beyond ComfyUI (comfyrun.handlers)
    #: The job types this worker runs (None: "comfy" when it has backends, plus every handler).
    types: Annotated[list[str] | None, NoDecode] = Field(
        default=None, validation_alias=_aliases("types")
    )
    #: Handlers besides the built-ins and entry points: "module:function" or "type=module:fn".
    handlers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("handlers")
    )
    #: How many handler jobs (of types other than comfy) one worker runs at once.
    handler_concurrency: int = Field(
        default=2, ge=1, le=256, validation_alias=_aliases("handler_concurrency")
    )
    #: After a cancel or a timeout sets a handler's cancel token, how long it gets to stop.
    handler_stop_grace_s: float = Field(
        default=5.0, ge=0, validation_alias=_aliases("handler_stop_grace_s")
    )
    #: Queue a job of a type no live worker serves (for workers yet to come) instead of 422.
    queue_unserved_types: bool = Field(
        default=False, validation_alias=_aliases("queue_unserved_types")
    )
    #: A worker without ComfyUI backends leaves comfy jobs in the queue ("queue") or, when it
    #: lists comfy in `types`, fails them with code comfy_unavailable ("fail").
    comfy_without_backends: Literal["queue", "fail"] = Field(
        default="queue", validation_alias=_aliases("comfy_without_backends")
    )

    log_level: str = Field(default="INFO", validation_alias=_aliases("log_level"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @field_validator(
        "api_keys",
        "allowed_origins",
        "webhook_allow",
        "fetch_allow",
        "types",
        "handlers",
        mode="before",
    )
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("types")
    @classmethod
    def _check_types(cls, value: list[str] | None) -> list[str] | None:
        from comfyrun.handlers.spec import valid_type_name

        bad = [t for t in value or () if not valid_type_name(t)]
        if bad:
            raise ValueError(f"not job type names: {bad}")
        return value

    @field_validator("fetch_allow", "webhook_allow")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for entry in value:
            if "/" in entry or entry.replace(".", "").isdigit() or ":" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(
                        f"{entry!r} is neither a CIDR nor a host name: {exc}"
                    ) from None
        return value

    @field_validator("backends", mode="before")
    @classmethod
    def _backends_from_urls(cls, value: Any) -> Any:
        # COMFYRUN_BACKENDS="http://a:8188,http://b:8188" as well as a JSON list of tables.
        if isinstance(value, str):
            text = value.strip()
            value = (
                json.loads(text)
                if text.startswith("[")
                else [u.strip() for u in text.split(",") if u.strip()]
            )
        if isinstance(value, list):
            return [{"url": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("db_url")
    @classmethod
    def _db_path_to_url(cls, value: str | None) -> str | None:
        # SQLITE_DB_PATH holds a file path, not a URL.
        if value is not None and "://" not in value:
            return f"sqlite:///{Path(value).expanduser().resolve()}"
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if self.api_key and self.api_key not in self.api_keys:
            self.api_keys = [*self.api_keys, self.api_key]
        extra: list[BackendConfig] = []
        if self.comfyui_server_address:
            url = normalise_backend_url(self.comfyui_server_address)
            if all(b.url != url for b in self.backends):
                extra.append(BackendConfig(url=url))
        if self.comfy_path is not None and all(
            b.comfy_path != self.comfy_path for b in self.backends
        ):
            extra.append(BackendConfig(comfy_path=self.comfy_path, port=self.comfy_port))
        if extra:
            self.backends = [*self.backends, *extra]
        check_backend_names(self.backends)
        return self

    # derived values -----------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """The store URL; default a SQLite file in the data directory."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'comfyrun.db').expanduser().resolve()}"

    @property
    def outputs_url(self) -> str:
        """The output storage URL; default `file://<data_dir>/outputs`."""
        if self.output_url:
            return self.output_url
        return (self.data_dir / "outputs").expanduser().resolve().as_uri()

    @property
    def models_dir(self) -> Path:
        """The model cache: `<data_dir>/models`."""
        return (self.data_dir / "models").expanduser().resolve()

    @property
    def retention_s(self) -> float:
        return self.retention_hours * 3600.0

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from (strongest first) `overrides`, the environment, the TOML file named by
    `config_file` or COMFYRUN_CONFIG, and the defaults. `None` overrides are ignored so CLI
    options left unset do not hide the environment."""
    values = {k: v for k, v in overrides.items() if v is not None}
    path = config_file if config_file is not None else os.environ.get(CONFIG_ENV)
    if not path:
        return Settings(**values)
    toml_path = Path(path).expanduser()
    if not toml_path.is_file():
        raise FileNotFoundError(f"config file {toml_path} does not exist")
    check_config_keys(toml_path, Settings)
    with_file = type(
        "Settings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": toml_path})},
    )
    settings: Settings = with_file(**values)
    return settings


__all__ = [
    "CONFIG_ENV",
    "BackendConfig",
    "Role",
    "Settings",
    "load_settings",
]
