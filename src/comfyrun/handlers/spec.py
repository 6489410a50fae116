"""Job types, handler targets and chains, as data: the pure part of comfyrun.handlers.

A job's `type` names the handler that runs it; "comfy" (a ComfyUI workflow) is the default. A
handler is found by an entry point (group `comfyrun.handlers`, name = the type) or a configured
target "module:function" (or "type=module:function"). A chain (`then`) is a list of steps, each
a handler type and its params, run on the outputs of the job before it; a step's outputs
replace the job's outputs (the default) or join them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from comfyrun.core.job import COMFY, JSON
from comfyrun.errors import InvalidParams

#: The entry point group handlers are registered under.
ENTRY_POINT_GROUP = "comfyrun.handlers"
#: At most this many steps in a chain.
MAX_CHAIN_STEPS = 8

_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

OutputMode = Literal["replace", "join"]


def valid_type_name(name: object) -> bool:
    """A job type: lower case letters, digits, "_" and "-", starting with a letter."""
    return isinstance(name, str) and _TYPE_NAME.match(name) is not None


def check_type_name(name: object) -> str:
    if not valid_type_name(name):
        raise InvalidParams(
            "a job type is 1-64 lower case letters, digits, '_' or '-', starting with a letter",
            details={"type": name},
        )
    assert isinstance(name, str)
    return name


@dataclass(frozen=True, slots=True)
class Target:
    """Where a handler lives: `module:attribute`, optionally under an explicit type name."""

    module: str
    attribute: str
    type: str | None = None

    def __str__(self) -> str:
        prefix = f"{self.type}=" if self.type else ""
        return f"{prefix}{self.module}:{self.attribute}"


def parse_target(text: str) -> Target:
    """Parse "module:function" or "type=module:function"; raises ValueError."""
    name: str | None = None
    spec = text.strip()
    if "=" in spec:
        name, spec = (part.strip() for part in spec.split("=", 1))
        if not valid_type_name(name):
            raise ValueError(f"handler {text!r}: {name!r} is not a valid job type name")
    module, sep, attribute = spec.partition(":")
    if not sep or not _DOTTED.match(module) or not _DOTTED.match(attribute):
        raise ValueError(f"handler {text!r}: expected 'module:function' or 'type=module:function'")
    return Target(module=module, attribute=attribute, type=name)


@dataclass(frozen=True, slots=True)
class ChainStep:
    """One follow-up step: run handler `type` with `params` on the outputs so far."""

    type: str
    params: JSON = field(default_factory=dict)
    outputs: OutputMode = "replace"

    def to_json(self) -> JSON:
        return {"type": self.type, "params": dict(self.params), "outputs": self.outputs}


def parse_chain(raw: Any) -> tuple[ChainStep, ...]:
    """The steps of a `then` list (None: none). Raises InvalidRequest naming the bad step."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidParams("`then` is a list of steps", details={"then": raw})
    if len(raw) > MAX_CHAIN_STEPS:
        raise InvalidParams(
            f"a chain has at most {MAX_CHAIN_STEPS} steps", details={"steps": len(raw)}
        )
    return tuple(_parse_step(i, item) for i, item in enumerate(raw))


def _parse_step(index: int, item: Any) -> ChainStep:
    where = {"step": index}
    if not isinstance(item, Mapping):
        raise InvalidParams(f"chain step {index} is not an object", details=where)
    unknown = set(item) - {"type", "params", "outputs"}
    if unknown:
        raise InvalidParams(
            f"chain step {index} has unknown fields {sorted(unknown)}",
            details={**where, "fields": sorted(unknown)},
        )
    kind = item.get("type")
    if not valid_type_name(kind) or kind == COMFY:
        raise InvalidParams(
            f"chain step {index} needs the `type` of a handler other than comfy",
            details={**where, "type": kind},
        )
    params = item.get("params", {})
    if not isinstance(params, Mapping):
        raise InvalidParams(f"chain step {index}: `params` is an object", details=where)
    outputs = item.get("outputs", "replace")
    if outputs not in ("replace", "join"):
        raise InvalidParams(
            f"chain step {index}: `outputs` is 'replace' or 'join'",
            details={**where, "outputs": outputs},
        )
    return ChainStep(type=str(kind), params=dict(params), outputs=outputs)


@dataclass(frozen=True, slots=True)
class TypePlan:
    """Who runs what on one worker: the dispatcher runs comfy jobs on ComfyUI backends, the
    handler lane the `lane` types; `announce` is every type the worker serves."""

    dispatcher: bool
    lane: tuple[str, ...]
    announce: tuple[str, ...]


def plan_types(
    declared: Sequence[str] | None,
    handlers: Iterable[str],
    *,
    has_backends: bool,
    comfy_without_backends: str = "queue",
) -> TypePlan:
    """The worker's plan from the types it declares (None: comfy when it has backends, plus
    every handler it has). Raises ValueError for a declared type it has no handler for. A
    worker without backends that declares comfy fails comfy jobs (in its lane) only when
    `comfy_without_backends` is "fail"; else it leaves them queued for other workers."""
    known = set(handlers)
    if declared is None:
        wanted = known | ({COMFY} if has_backends else set())
    else:
        wanted = set(declared)
        unknown = sorted(wanted - known - {COMFY})
        if unknown:
            raise ValueError(
                f"this worker has no handler for job type(s) {unknown} "
                f"(handlers here: {sorted(known) or 'none'})"
            )
    dispatcher = COMFY in wanted and has_backends
    lane = wanted - {COMFY}
    if COMFY in wanted and not has_backends and comfy_without_backends == "fail":
        lane.add(COMFY)
    served = lane | ({COMFY} if dispatcher else set())
    return TypePlan(dispatcher=dispatcher, lane=tuple(sorted(lane)), announce=tuple(sorted(served)))


def chain_of(options: Mapping[str, Any]) -> tuple[ChainStep, ...]:
    """The chain a stored job carries (`options["then"]`, already checked at submission)."""
    return parse_chain(options.get("then"))


__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_CHAIN_STEPS",
    "ChainStep",
    "OutputMode",
    "Target",
    "TypePlan",
    "chain_of",
    "check_type_name",
    "parse_chain",
    "parse_target",
    "plan_types",
    "valid_type_name",
]
