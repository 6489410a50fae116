"""The `inputs` of a submit body, parsed and checked without I/O.

    {"inputs": [{"name"?: "photo.png", "data"?: "<base64 or data: URI>", "url"?: "https://…",
                 "asset_id"?: "…", "node"?: "12", "input"?: "image"}]}

Each entry has exactly one source (`data`, `url` or `asset_id`). It reaches the workflow either
through a target (`node` + `input`) or by its `name`: a loader input (LoadImage, video/audio
loaders…) that already holds that file name is pointed at the placed file. `validate_inputs` is
what the API calls at submission, so bad input is a 4xx there and not a failed job later.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from comfyrun.errors import InputRejected
from comfyrun.inputs.names import sanitize_name

#: Inputs a loader node commonly takes a file name in, for a target with a node but no input.
FILE_INPUT_NAMES: tuple[str, ...] = ("image", "video", "audio", "file", "mask", "upload")


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Limits on the inputs of one job. Every violation raises InputRejected."""

    max_files: int = 16
    max_file_bytes: int = 100 * 1024 * 1024
    max_total_bytes: int = 512 * 1024 * 1024
    #: Sum of the inline `data` strings in one request (base64 text, before decoding).
    max_inline_bytes: int = 64 * 1024 * 1024
    fetch_timeout_s: float = 30.0
    #: A URL that sends nothing (no answer, or no byte of its body) this long is given up, as
    #: `timeout`, whatever `fetch_timeout_s` leaves (a model download may take an hour).
    fetch_idle_timeout_s: float = 60.0
    max_redirects: int = 5
    #: Content types a URL may answer with: "type/" prefixes or exact types.
    allowed_content_types: tuple[str, ...] = (
        "image/",
        "video/",
        "audio/",
        "application/octet-stream",
    )
    #: CIDRs ("10.0.0.0/8", "127.0.0.1") and host names that may be fetched even though they are
    #: private, loopback or link-local. Empty: only public addresses.
    allow_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for entry in self.allow_networks:
            if "/" in entry or _looks_like_ip(entry):
                ipaddress.ip_network(entry, strict=False)  # ValueError on a bad CIDR


@dataclass(frozen=True, slots=True)
class InputTarget:
    """`workflow[node]["inputs"][input]` is set to the placed file name."""

    node: str
    input: str


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One entry of `inputs`, validated. `name` is sanitized (may hold "sub/dir/" parts)."""

    index: int
    name: str | None
    data: str | None = None
    url: str | None = None
    asset_id: str | None = None
    target: InputTarget | None = None

    @property
    def kind(self) -> str:
        """ "data", "url" or "asset"."""
        return "data" if self.data is not None else "url" if self.url is not None else "asset"


def parse_input_specs(raw: Sequence[Any], limits: InputLimits) -> list[InputSpec]:
    """Parse the `inputs` list (shape, one source each, names, counts, inline size)."""
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise InputRejected("inputs must be a list of objects")
    if len(raw) > limits.max_files:
        raise InputRejected(
            f"too many inputs: {len(raw)} (the limit is {limits.max_files})",
            details={"reason": "too_many_files", "count": len(raw), "limit": limits.max_files},
        )
    specs: list[InputSpec] = []
    inline_total = 0
    seen_names: dict[str, int] = {}
    for index, item in enumerate(raw):
        spec = _parse_one(index, item)
        if spec.data is not None:
            inline_total += len(spec.data)
            if inline_total > limits.max_inline_bytes:
                raise InputRejected(
                    f"inline input data exceeds {limits.max_inline_bytes} bytes in total",
                    details={"reason": "request_too_large", "limit": limits.max_inline_bytes},
                )
        if spec.name is not None:
            if spec.name in seen_names:
                raise InputRejected(
                    f"inputs[{index}]: the name {spec.name!r} is used twice",
                    details={"index": index, "reason": "duplicate_name", "name": spec.name},
                )
            seen_names[spec.name] = index
        specs.append(spec)
    return specs


def _parse_one(index: int, item: Any) -> InputSpec:
    where = f"inputs[{index}]"
    if not isinstance(item, Mapping):
        raise InputRejected(f"{where} must be an object", details={"index": index})
    known = {"name", "data", "url", "asset_id", "node", "input"}
    unknown = sorted(set(item) - known)
    if unknown:
        raise InputRejected(
            f"{where} has unknown fields: {', '.join(map(str, unknown))}",
            details={"index": index, "unknown": unknown},
        )
    for field in known:
        value = item.get(field)
        if value is not None and not isinstance(value, str):
            raise InputRejected(f"{where}.{field} must be a string", details={"index": index})
    sources = [f for f in ("data", "url", "asset_id") if item.get(f) is not None]
    if len(sources) != 1:
        raise InputRejected(
            f"{where} needs exactly one of data, url or asset_id",
            details={"index": index, "reason": "source"},
        )
    node, input_name = item.get("node"), item.get("input")
    if input_name is not None and node is None:
        raise InputRejected(f"{where}.input needs a node", details={"index": index})
    raw_name = item.get("name")
    name = sanitize_name(raw_name, index=index) if raw_name is not None else None
    if name is None and node is None and sources[0] == "data":
        raise InputRejected(
            f"{where} needs a name or a node to go to", details={"index": index, "reason": "target"}
        )
    target = InputTarget(str(node), str(input_name or "")) if node is not None else None
    return InputSpec(
        index=index,
        name=name,
        data=item.get("data"),
        url=item.get("url"),
        asset_id=item.get("asset_id"),
        target=target,
    )


def _looks_like_ip(entry: str) -> bool:
    try:
        ipaddress.ip_address(entry)
    except ValueError:
        return False
    return True


__all__ = ["FILE_INPUT_NAMES", "InputLimits", "InputSpec", "InputTarget", "parse_input_specs"]
