"""What a ComfyUI backend can run, and the fleet's union of it. Pure: no I/O.

A `NodeCatalog` is one backend's answers to GET /object_info, /models, /models/{folder},
/embeddings and /features, with its ComfyUI version and when they were fetched. The fleet shows
ComfyUI clients one server whose definitions are the union of its backends':

- a node type that any backend has is listed; where several have it, the first backend's
  definition is kept and inputs that only later ones have are added to it;
- a combo input (a list of choices: `[[choices], {...}]`, or `["COMBO", {"options": [...]}]`)
  offers every choice any backend offers, in first-seen order (kept sorted when every backend's
  list was sorted, as ComfyUI sorts file lists);
- model folders, their file lists and embeddings are unions of names;
- a boolean feature holds only if every backend has it; other features come from the first.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeCatalog:
    """One backend's node definitions and model lists, as its ComfyUI served them."""

    backend: str
    object_info: JSON
    fetched_at: float
    comfyui_version: str | None = None
    models: dict[str, list[str]] = field(default_factory=dict)
    embeddings: list[str] = field(default_factory=list)
    features: JSON = field(default_factory=dict)

    @property
    def model_folders(self) -> list[str]:
        return list(self.models)


#: The parts of a node definition that hold lists, and those that hold objects.
_LIST_PARTS = ("output", "output_name", "output_is_list", "output_tooltips")
_INPUT_SECTIONS = ("required", "optional")


def well_formed(object_info: Mapping[str, Any]) -> tuple[JSON, list[str]]:
    """The node definitions of `object_info` in ComfyUI's shape, and the names of those that
    are not (dropped: every reader of definitions — validation, the converter, the model
    and input checks, the union — takes that shape for granted). A definition is an object;
    its `input` an object whose `required` and `optional` sections are objects of input specs,
    each a list of a type (a name, or a list of choices) and, optionally, an object of
    options; its `output`… parts lists."""
    kept: JSON = {}
    dropped: list[str] = []
    for name, definition in object_info.items():
        if _well_formed_definition(definition):
            kept[name] = definition
        else:
            dropped.append(str(name))
    return kept, dropped


def _well_formed_definition(definition: Any) -> bool:
    if not isinstance(definition, dict):
        return False
    if any(not isinstance(definition.get(k, []), list) for k in _LIST_PARTS):
        return False
    inputs = definition.get("input", {})
    if not isinstance(inputs, dict) or not isinstance(inputs.get("hidden", {}), dict):
        return False
    for section in _INPUT_SECTIONS:
        specs = inputs.get(section, {})
        if not isinstance(specs, dict) or not all(_well_formed_spec(s) for s in specs.values()):
            return False
    return isinstance(definition.get("input_order", {}), dict)


def _well_formed_spec(spec: Any) -> bool:
    """`[type]` or `[type, {options}]`: the type a name or a list of choices."""
    if not isinstance(spec, list | tuple) or not spec:
        return False
    return isinstance(spec[0], str | list) and (len(spec) == 1 or isinstance(spec[1], dict))


def union_catalog(catalogs: Sequence[NodeCatalog], *, name: str = "") -> NodeCatalog:
    """The union of `catalogs` (first ones win where definitions differ) as one catalog."""
    return NodeCatalog(
        backend=name,
        object_info=union_object_info([c.object_info for c in catalogs]),
        fetched_at=min((c.fetched_at for c in catalogs), default=0.0),
        comfyui_version=next((c.comfyui_version for c in catalogs if c.comfyui_version), None),
        models=union_models([c.models for c in catalogs]),
        embeddings=union_names([c.embeddings for c in catalogs]),
        features=merge_features([c.features for c in catalogs]),
    )


def union_object_info(infos: Sequence[Mapping[str, Any]]) -> JSON:
    """Node types of every backend; a type several have gets the union of their inputs."""
    if len(infos) == 1:
        return dict(infos[0])
    merged: JSON = {}
    for info in infos:
        for class_type, node in info.items():
            if class_type not in merged:
                merged[class_type] = node
            elif (
                isinstance(node, Mapping)
                and isinstance(merged[class_type], Mapping)
                and node != merged[class_type]
            ):
                merged[class_type] = _merge_node(merged[class_type], node)
    return merged


def _merge_node(first: Mapping[str, Any], other: Mapping[str, Any]) -> JSON:
    node = copy.deepcopy(dict(first))
    inputs = node.setdefault("input", {})
    order = node.get("input_order")
    for section, specs in (other.get("input") or {}).items():
        if not isinstance(specs, Mapping):
            continue
        mine = inputs.setdefault(section, {})
        if not isinstance(mine, dict):
            continue
        for input_name, spec in specs.items():
            if input_name not in mine:
                mine[input_name] = copy.deepcopy(spec)
                if isinstance(order, dict):
                    order.setdefault(section, []).append(input_name)
            else:
                mine[input_name] = merge_input(mine[input_name], spec)
    return node


def merge_input(first: Any, other: Any) -> Any:
    """One input spec offered by two backends: combo choices united, otherwise the first."""
    mine, theirs = combo_choices(first), combo_choices(other)
    if mine is None or theirs is None:
        return first
    choices = union_names([mine, theirs])
    if choices == mine:
        return first
    spec = copy.deepcopy(first)
    if isinstance(spec[0], list):
        spec[0] = choices
    else:
        spec[1]["options"] = choices
    return spec


def combo_choices(spec: Any) -> list[Any] | None:
    """The choices of a combo input spec, None for any other input."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], Mapping):
        options = spec[1].get("options")
        return options if isinstance(options, list) else None
    return None


def union_names(lists: Iterable[Sequence[Any]]) -> list[Any]:
    """Every name once, in first-seen order; sorted when every list was sorted."""
    seen: dict[Any, None] = {}
    all_sorted = True
    for names in lists:
        all_sorted = all_sorted and _is_sorted(names)
        for n in names:
            key = _hashable(n)
            if key not in seen:
                seen[key] = n
    out = list(seen.values())
    if all_sorted:
        with contextlib.suppress(TypeError):  # mixed types: keep first-seen order
            out = sorted(out, key=_itself)
    return out


def union_models(folders: Iterable[Mapping[str, Sequence[str]]]) -> dict[str, list[str]]:
    """Model folder → files, united over backends (folders in first-seen order)."""
    merged: dict[str, list[list[str]]] = {}
    for models in folders:
        for folder, names in models.items():
            merged.setdefault(folder, []).append(list(names))
    return {folder: union_names(lists) for folder, lists in merged.items()}


def merge_features(features: Sequence[Mapping[str, Any]]) -> JSON:
    """A boolean feature is on only if every backend that reports it has it on."""
    merged: JSON = {}
    for one in features:
        for key, value in one.items():
            if key not in merged:
                merged[key] = value
            elif isinstance(value, bool) and isinstance(merged[key], bool):
                merged[key] = merged[key] and value
    return merged


def definitions_may_be_stale(refusal: Any) -> bool:
    """Whether a validation refusal (ComfyUI's {"error", "node_errors"} shape) names a node type
    or a combo value (a model file) that the definitions lack: stored definitions may predate a
    backend's new custom nodes or models, so they are worth asking again before refusing."""
    if not isinstance(refusal, Mapping):
        return False
    error = refusal.get("error")
    if (
        isinstance(error, Mapping)
        and error.get("type") == "invalid_prompt"
        and "does not exist" in str(error.get("message", ""))
    ):
        return True
    for node in (refusal.get("node_errors") or {}).values():
        errors = node.get("errors", []) if isinstance(node, Mapping) else []
        if any(isinstance(e, Mapping) and e.get("type") == "value_not_in_list" for e in errors):
            return True
    return False


def _itself(value: Any) -> Any:
    return value


def _is_sorted(names: Sequence[Any]) -> bool:
    try:
        return all(a <= b for a, b in itertools.pairwise(names))
    except TypeError:
        return False


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


__all__ = [
    "NodeCatalog",
    "combo_choices",
    "definitions_may_be_stale",
    "merge_features",
    "merge_input",
    "union_catalog",
    "union_models",
    "union_names",
    "union_object_info",
    "well_formed",
]
