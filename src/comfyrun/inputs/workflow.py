"""Pointing an API-format workflow at placed input files (pure).

Three ways an input reaches a node:
  1. a target: `workflow[node]["inputs"][input] = placed_name`;
  2. by name: any node input that holds the input's `name` (or ComfyUI's annotated
     "name [input]") is a loader (LoadImage, LoadVideo, LoadAudio…) and gets the placed name;
  3. an asset reference anywhere in a node's inputs,
     `{"__type": "core/ASSET", "info": {"id": …}}`, becomes the placed name of that asset.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from comfyrun.core.job import JSON
from comfyrun.errors import InputRejected, MissingAsset
from comfyrun.inputs.specs import FILE_INPUT_NAMES, InputSpec, InputTarget

ASSET_TYPE = "core/ASSET"


def is_asset_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("__type") == ASSET_TYPE


def asset_ref_id(value: Mapping[str, Any]) -> str:
    """The id of an asset reference; a malformed reference raises MissingAsset."""
    info = value.get("info")
    asset_id = info.get("id") if isinstance(info, Mapping) else None
    if not isinstance(asset_id, str) or not asset_id:
        raise MissingAsset("an asset reference has no info.id", details={"reference": dict(value)})
    return asset_id


def find_asset_refs(workflow: JSON) -> list[str]:
    """The ids of every asset referenced in the workflow's inputs, in order, without repeats."""
    found: dict[str, None] = {}
    for node in _nodes(workflow):
        _collect(node.get("inputs", {}), found)
    return list(found)


def resolve_target(workflow: JSON, spec: InputSpec) -> InputTarget | None:
    """The spec's target with its input filled in, checked against the workflow. A node with no
    input named picks the one file input it has (image, video, audio…). Raises InputRejected
    when the node or input does not exist."""
    target = spec.target
    if target is None:
        return None
    details = {"index": spec.index, "node": target.node, "input": target.input or None}
    node = workflow.get(target.node)
    if not isinstance(node, Mapping) or not isinstance(node.get("inputs"), Mapping):
        raise InputRejected(
            f"inputs[{spec.index}] targets node {target.node!r}, which is not in the workflow",
            details={**details, "reason": "unknown_node"},
        )
    inputs: Mapping[str, Any] = node["inputs"]
    if target.input:
        if target.input not in inputs:
            raise InputRejected(
                f"inputs[{spec.index}] targets input {target.input!r} of node {target.node!r}, "
                "which that node does not have",
                details={**details, "reason": "unknown_input", "available": sorted(inputs)},
            )
        if _is_link(inputs[target.input]):
            raise InputRejected(
                f"inputs[{spec.index}] targets input {target.input!r} of node {target.node!r}, "
                "which is connected to another node, not a file name",
                details={**details, "reason": "linked_input"},
            )
        return target
    candidates = [n for n in FILE_INPUT_NAMES if n in inputs and not _is_link(inputs[n])]
    if len(candidates) != 1:
        raise InputRejected(
            f"inputs[{spec.index}] targets node {target.node!r} without naming the input",
            details={**details, "reason": "ambiguous_input", "available": sorted(inputs)},
        )
    return InputTarget(target.node, candidates[0])


def check_targets(workflow: JSON, specs: Sequence[InputSpec]) -> None:
    """Raise InputRejected unless every targeted node and input exists."""
    for spec in specs:
        resolve_target(workflow, spec)


def point_workflow_at_inputs(
    workflow: JSON,
    specs: Sequence[InputSpec],
    placed: Sequence[str],
    asset_names: Mapping[str, str],
) -> JSON:
    """A copy of `workflow` that uses the placed files.

    `placed[i]` is the name `specs[i]` was placed under; `asset_names` maps each referenced asset
    id to its placed name. Raises InputRejected for a target that does not exist and MissingAsset
    for an asset reference with no placed name.
    """
    if len(placed) != len(specs):
        raise ValueError("one placed name per input spec")
    result: JSON = copy.deepcopy(workflow)
    for spec, name in zip(specs, placed, strict=True):
        target = resolve_target(result, spec)
        if target is not None:
            result[target.node]["inputs"][target.input] = name
        elif spec.name is not None:
            _replace_named(result, spec.name, name)
    for node_id, node in _items(result):
        node["inputs"] = _swap_assets(node.get("inputs", {}), asset_names, node_id)
    return result


def _replace_named(workflow: JSON, original: str, placed: str) -> None:
    annotated = f"{original} [input]"
    for _, node in _items(workflow):
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        for key, value in inputs.items():
            if value in (original, annotated):
                inputs[key] = placed


def _swap_assets(value: Any, names: Mapping[str, str], node_id: str) -> Any:
    if is_asset_ref(value):
        asset_id = asset_ref_id(value)
        if asset_id not in names:
            raise MissingAsset(
                f"asset {asset_id!r} (node {node_id}) does not exist",
                details={"asset_id": asset_id, "node": node_id},
            )
        return names[asset_id]
    if isinstance(value, dict):
        return {k: _swap_assets(v, names, node_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap_assets(v, names, node_id) for v in value]
    return value


def _is_link(value: Any) -> bool:
    """A connection in API format: [source node id, output index]."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def _collect(value: Any, found: dict[str, None]) -> None:
    # most values are text and numbers: told apart first, by their concrete types (an
    # isinstance of the Mapping ABC costs several times as much; 3 us a node went to ~0.6)
    if isinstance(value, _SCALARS) or value is None:
        return
    if isinstance(value, dict | Mapping):
        if value.get("__type") == ASSET_TYPE:
            found[asset_ref_id(value)] = None
        else:
            for item in value.values():
                _collect(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)


_SCALARS = (str, int, float)


def _nodes(workflow: JSON) -> list[Mapping[str, Any]]:
    return [node for node in workflow.values() if isinstance(node, dict | Mapping)]


def _items(workflow: JSON) -> list[tuple[str, dict[str, Any]]]:
    return [(k, node) for k, node in workflow.items() if isinstance(node, dict)]


__all__ = [
    "ASSET_TYPE",
    "check_targets",
    "find_asset_refs",
    "is_asset_ref",
    "point_workflow_at_inputs",
    "resolve_target",
]
