"""Which backends can run a job: node types, model files and hardware labels. Pure.

Rules:
- A backend can run a workflow when its object_info has every `class_type` the workflow uses
  and lists every value the workflow gives a combo input (a model file, a sampler name, ...).
  Combo inputs that take an uploaded file (`image_upload`, ...) are not checked: a job's input
  files are placed on the backend at dispatch; nor are the model files a job brings.
- A backend whose object_info is not known yet (a lazy backend never started) is judged on its
  labels alone; one whose labels are not known is judged on its object_info alone.
- `requirements` (a job option) are matched against the backend's `labels` (config): a plain
  value must equal the label; `{"min": x}` / `{"max": y}` bound a numeric label; `{"in": [...]}`
  lists the values allowed. A label the backend does not have fails every requirement on it.
- A job that brings model files (its `models` option) fits only backends comfyrun can deliver
  files to (managed ones: they see its model cache); that is the dispatcher's to say.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The keys a requirement given as an object may use.
REQUIREMENT_OPS = frozenset({"min", "max", "in"})

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class BackendOffer:
    """What fitting needs to know of one backend: its labels (None: not known here, e.g. an
    API node that does not configure the workers' backends) and object_info (None: not known
    yet)."""

    name: str
    labels: Mapping[str, Scalar] | None = field(default_factory=dict)
    object_info: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Misfit:
    """Why one backend cannot run a job."""

    backend: str
    missing_nodes: tuple[str, ...] = ()
    #: (node id, input name, value) of combo values the backend does not list
    missing_values: tuple[tuple[str, str, str], ...] = ()
    #: requirement names the backend's labels do not meet
    unmet: tuple[str, ...] = ()
    #: the job brings model files (`models`) and comfyrun cannot deliver files to it
    no_model_delivery: bool = False

    def describe(self) -> str:
        parts = []
        if self.missing_nodes:
            parts.append("no node types " + ", ".join(self.missing_nodes))
        if self.missing_values:
            parts.append(
                "no "
                + ", ".join(
                    f"{value} (node {node} {name})" for node, name, value in self.missing_values
                )
            )
        if self.unmet:
            parts.append("labels do not meet " + ", ".join(self.unmet))
        if self.no_model_delivery:
            parts.append(
                "cannot receive the job's model files (only backends comfyrun manages see "
                "its model cache)"
            )
        return f"{self.backend}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "missing_node_types": list(self.missing_nodes),
            "missing_values": [
                {"node_id": node, "input": name, "value": value}
                for node, name, value in self.missing_values
            ],
            "unmet_requirements": list(self.unmet),
            "receives_models": not self.no_model_delivery,
        }


class RequirementError(ValueError):
    """A `requirements` value that is not a valid requirement."""


def check_requirements(requirements: Any) -> dict[str, Any]:
    """`requirements` as a dict, or RequirementError saying what is wrong with it."""
    if requirements is None:
        return {}
    if not isinstance(requirements, Mapping):
        raise RequirementError("requirements must be an object of label: value")
    for name, want in requirements.items():
        if isinstance(want, Mapping):
            unknown = set(want) - REQUIREMENT_OPS
            if unknown or not want:
                raise RequirementError(
                    f"requirement {name!r}: use a value or an object with min, max or in"
                )
            for op in ("min", "max"):
                if op in want and not _is_number(want[op]):
                    raise RequirementError(f"requirement {name!r}: {op} must be a number")
            if "in" in want and not (
                isinstance(want["in"], list) and all(_is_scalar(v) for v in want["in"])
            ):
                raise RequirementError(f"requirement {name!r}: in must be a list of values")
        elif not _is_scalar(want):
            raise RequirementError(f"requirement {name!r}: must be a value or an object")
    return dict(requirements)


def unmet_requirements(requirements: Mapping[str, Any], labels: Mapping[str, Scalar]) -> list[str]:
    """The names of the requirements `labels` do not meet."""
    unmet = []
    for name, want in requirements.items():
        if name not in labels or not _meets(labels[name], want):
            unmet.append(name)
    return unmet


def missing_in(
    workflow: Mapping[str, Any],
    object_info: Mapping[str, Any],
    brought: frozenset[str] = frozenset(),
) -> tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]]:
    """(node types, combo values) `workflow` uses that `object_info` does not have; values in
    `brought` (model files the job brings) are not looked for. Each node type's combo inputs
    are read from `object_info` once (CompiledCatalog), not at every job's placement."""
    catalog = compiled(object_info)
    nodes: list[str] = []
    values: list[tuple[str, str, str]] = []
    for node_id, node in workflow.items():
        if not isinstance(node, Mapping):
            continue
        class_type = node.get("class_type")
        if not isinstance(class_type, str):
            continue
        combos = catalog.combos(class_type)
        if combos is None:
            if class_type not in nodes:
                nodes.append(class_type)
            continue
        inputs = node.get("inputs")
        if not isinstance(inputs, Mapping) or not combos:
            continue
        for name, value in inputs.items():
            options = combos.get(name)
            if (
                options is not None
                and isinstance(value, str)
                and value not in options
                and value not in brought
            ):
                values.append((str(node_id), str(name), value))
    return tuple(nodes), tuple(values)


class CompiledCatalog:
    """One object_info's combo inputs per node type, as sets, read on first use."""

    def __init__(self, object_info: Mapping[str, Any]) -> None:
        self.object_info = object_info
        self._nodes: dict[str, dict[str, Container[Any]] | None] = {}

    def combos(self, class_type: str) -> dict[str, Container[Any]] | None:
        """The node type's combo inputs and the values each allows (None: no such type)."""
        try:
            return self._nodes[class_type]
        except KeyError:
            pass
        info = self.object_info.get(class_type)
        found: dict[str, Container[Any]] | None = None
        if isinstance(info, Mapping):
            found = {}
            for name, spec in _input_specs(info).items():
                options = _combo_options(spec)
                if options is not None:
                    found[name] = _lookup(options)
        self._nodes[class_type] = found
        return found


#: The catalogs compiled last, by the identity of their object_info (a backend's catalog is a
#: new dict whenever it is read again); a few, so those of a fleet's backends all stay.
_COMPILED: dict[int, CompiledCatalog] = {}
_COMPILED_KEEP = 32


def compiled(object_info: Mapping[str, Any]) -> CompiledCatalog:
    """The CompiledCatalog of `object_info` (kept while it is among the last few used)."""
    key = id(object_info)
    found = _COMPILED.get(key)
    if found is not None and found.object_info is object_info:
        return found
    found = CompiledCatalog(object_info)
    _COMPILED.pop(key, None)
    _COMPILED[key] = found
    while len(_COMPILED) > _COMPILED_KEEP:
        del _COMPILED[next(iter(_COMPILED))]
    return found


def _lookup(options: list[Any]) -> Container[Any]:
    """`options` for membership tests: a set when its values can be hashed."""
    try:
        return frozenset(options)
    except TypeError:
        return tuple(options)


def misfit(
    workflow: Mapping[str, Any],
    requirements: Mapping[str, Any],
    backend: BackendOffer,
    *,
    values: bool = True,
    brought: frozenset[str] = frozenset(),
) -> Misfit | None:
    """Why `backend` cannot run the job, or None when it can (as far as it is known). Without
    `values`, combo values are not checked (a job whose input files replace some of them)."""
    unmet: tuple[str, ...] = ()
    if backend.labels is not None:
        unmet = tuple(unmet_requirements(requirements, backend.labels))
    nodes: tuple[str, ...] = ()
    missing: tuple[tuple[str, str, str], ...] = ()
    if backend.object_info is not None:
        nodes, missing = missing_in(workflow, backend.object_info, brought)
        if not values:
            missing = ()
    if not (unmet or nodes or missing):
        return None
    return Misfit(backend.name, nodes, missing, unmet)


def first_fit(
    workflow: Mapping[str, Any],
    requirements: Mapping[str, Any],
    backends: Iterable[BackendOffer],
    *,
    values: bool = True,
    brought: frozenset[str] = frozenset(),
) -> tuple[bool, BackendOffer | None, list[Misfit]]:
    """(whether some backend can run the job, the first one that can whose object_info is
    known, why each backend cannot when none can). The backends after that first one are not
    looked at: a submission asks which definitions to validate against, not where the job
    will run (a fleet of alike backends is one look, not one each)."""
    fits = False
    unfit: list[Misfit] = []
    for backend in backends:
        why = misfit(workflow, requirements, backend, values=values, brought=brought)
        if why is not None:
            unfit.append(why)
        elif backend.object_info:
            return True, backend, []
        else:
            fits = True
    return fits, None, [] if fits else unfit


def _input_specs(info: Mapping[str, Any]) -> dict[str, Any]:
    specs: dict[str, Any] = {}
    inputs = info.get("input")
    if isinstance(inputs, Mapping):
        for group in ("required", "optional"):
            part = inputs.get(group)
            if isinstance(part, Mapping):
                specs.update(part)
    return specs


def _combo_options(spec: Any) -> list[Any] | None:
    """The values a combo input allows (legacy `[[...], {...}]` or `["COMBO", {"options":
    [...]}]`), or None when it is not a combo or takes an upload."""
    if not isinstance(spec, list | tuple) or not spec:
        return None
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    if any(str(key).endswith("upload") for key in extra):
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and isinstance(extra.get("options"), list):
        options: list[Any] = extra["options"]
        return options
    return None


def _meets(have: Scalar, want: Any) -> bool:
    if isinstance(want, Mapping):
        if "in" in want and have not in want["in"]:
            return False
        if "min" in want and not (_is_number(have) and have >= want["min"]):
            return False
        return not ("max" in want and not (_is_number(have) and have <= want["max"]))
    if _is_number(want) and _is_number(have):
        return bool(have == want)
    return bool(have == want) or str(have) == str(want)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


__all__ = [
    "REQUIREMENT_OPS",
    "BackendOffer",
    "CompiledCatalog",
    "Misfit",
    "RequirementError",
    "check_requirements",
    "compiled",
    "first_fit",
    "misfit",
    "missing_in",
    "unmet_requirements",
]
