"""One ComfyUI backend as the settings give it (`[[backends]]` in the TOML file, `--backend`,
`--comfy`): a running server's URL or a managed ComfyUI's folder or command, and the checks on
them (a URL no ComfyUI can be at, two backends of one name)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class BackendConfig(BaseModel):
    """One ComfyUI backend: a running server (`url`) or a managed one (`comfy_path`/`command`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    url: str | None = None
    comfy_path: Path | None = None
    command: list[str] | None = None
    python: str | None = None
    cwd: Path | None = None
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    port: int | None = Field(default=None, ge=1, le=65535)
    lazy: bool = True
    ready_timeout_s: float = Field(default=120.0, gt=0)
    idle_stop_s: float | None = Field(default=None, gt=0)
    #: one process per GPU on this folder: `<name>-gpu<i>` with CUDA_VISIBLE_DEVICES=<i>
    gpus: list[int] | None = None
    #: an API-format prompt (JSON file) run after each start; ready only once it succeeded
    warmup_prompt: Path | None = None
    #: What this backend offers (e.g. gpu = "4090", vram_gb = 24), matched against a job's
    #: `requirements` (see core.fit).
    labels: dict[str, str | int | float | bool] = Field(default_factory=dict)
    #: A `url` backend on this machine (a worker beside its ComfyUI) that reads comfyrun's model
    #: cache: started with `--extra-model-paths-config <data_dir>/models/extra_model_paths.yaml`.
    #: Jobs that bring model files may then run on it (otherwise only on managed backends).
    sees_model_cache: bool = False

    @field_validator("url")
    @classmethod
    def _normalise_url(cls, value: str | None) -> str | None:
        return None if value is None else normalise_backend_url(value)

    @model_validator(mode="after")
    def _one_kind(self) -> BackendConfig:
        kinds = [self.url is not None, self.comfy_path is not None, self.command is not None]
        if sum(kinds) != 1:
            raise ValueError("a backend needs exactly one of url, comfy_path or command")
        if self.url is not None:
            # what only a process comfyrun starts can use: silently ignored on a url backend
            given = sorted(k for k in MANAGED_ONLY if k in self.model_fields_set)
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply only to a ComfyUI comfyrun starts (comfy_path "
                    "or command), not to one at a url"
                )
        elif self.sees_model_cache:
            raise ValueError(
                "sees_model_cache is for a url backend (a ComfyUI comfyrun starts sees the "
                "model cache already)"
            )
        if self.gpus is not None:
            if self.url is not None:
                raise ValueError("gpus applies to managed backends (comfy_path or command)")
            if not self.gpus or len(set(self.gpus)) != len(self.gpus) or min(self.gpus) < 0:
                raise ValueError("gpus must list distinct GPU indices, e.g. gpus = [0, 1]")
            if self.port is not None and len(self.gpus) > 1:
                raise ValueError("a fixed port cannot be shared by one process per GPU")
        return self

    def per_gpu(self, name: str) -> list[tuple[str, BackendConfig]]:
        """(name, config) for each process this table starts: itself, or one per GPU."""
        if self.gpus is None:
            return [(name, self)]
        return [
            (
                f"{name}-gpu{gpu}",
                self.model_copy(
                    update={"gpus": None, "env": {**self.env, "CUDA_VISIBLE_DEVICES": str(gpu)}}
                ),
            )
            for gpu in self.gpus
        ]

    @property
    def managed(self) -> bool:
        return self.url is None

    def base_name(self, index: int) -> str:
        """The name of the `index`-th table's backend: its `name`, else a URL's host:port (and
        path) or `comfy-<index + 1>` (with `gpus`, the stem of each process's name)."""
        if self.name:
            return self.name
        return self.url.split("://", 1)[-1] if self.url is not None else f"comfy-{index + 1}"

    def names(self, index: int) -> list[str]:
        """The names of the pool's backends from this table, the `index`-th (one per GPU with
        `gpus`)."""
        return [name for name, _ in self.per_gpu(self.base_name(index))]


#: `[[backends]]` keys that only a managed backend (comfy_path or command) uses.
MANAGED_ONLY = frozenset(
    {
        "python",
        "cwd",
        "extra_args",
        "env",
        "port",
        "lazy",
        "ready_timeout_s",
        "idle_stop_s",
        "warmup_prompt",
    }
)


def check_backend_names(backends: list[BackendConfig]) -> None:
    """ValueError when two of `backends` would have one name in the pool."""
    seen: set[str] = set()
    for index, backend in enumerate(backends):
        for name in backend.names(index):
            if name in seen:
                raise ValueError(
                    f"two backends are named {name!r} (the same URL twice, or the same name): "
                    "give each its own name, or list a ComfyUI once"
                )
            seen.add(name)


def normalise_backend_url(value: str) -> str:
    """`127.0.0.1:8188` (COMFYUI_SERVER_ADDRESS style) → `http://127.0.0.1:8188`. ValueError
    for what no ComfyUI can be reached at: a scheme other than http(s), no host, a bad port."""
    text = value.strip()
    url = text if "://" in text else f"http://{text}"
    parts = urlsplit(url)
    try:
        port_ok = parts.port is not None or not parts.netloc.endswith(":")
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError(
            f"backend URL {value!r} is not http(s)://host[:port] (or host:port) of a ComfyUI"
        )
    return url.rstrip("/")


__all__ = ["MANAGED_ONLY", "BackendConfig", "check_backend_names", "normalise_backend_url"]
