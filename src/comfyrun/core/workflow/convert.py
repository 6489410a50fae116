"""UI-format workflow -> API prompt, reproducing what frontend 1.27's `graphToPrompt()` sends.

Pure: the caller supplies the parsed workflow and the server's object_info. The result is the
`prompt` object of `POST /prompt`. A workflow that uses node classes the server does not know is
refused (ConversionError naming each such node) instead of producing a prompt ComfyUI would reject.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from comfyrun.core.workflow.flatten import ExecGraph, ExecNode, Ref, Value
from comfyrun.core.workflow.graph import parse_workflow
from comfyrun.core.workflow.prompts import process_dynamic_prompt
from comfyrun.core.workflow.titles import display_name
from comfyrun.core.workflow.widgets import UNSET, migrate_values, widget_layout
from comfyrun.errors import ConversionError

JSON = dict[str, Any]


def convert_ui_to_api(
    ui: dict[str, Any], object_info: dict[str, Any], *, rng: random.Random | None = None
) -> dict[str, Any]:
    """Convert a UI-format workflow to an API prompt using the node definitions in `object_info`.

    Raises ConversionError for malformed input and for nodes whose class is missing from
    `object_info` (details: `missing_node_types`, `nodes` as [{"id", "type", "title"}]).
    `rng` picks the options of dynamic prompts (`{a|b}` in text widgets); a fresh one by default.
    """
    rng = rng if rng is not None else random.Random()
    if not isinstance(object_info, dict):
        raise ConversionError("object_info must be a JSON object of node classes")
    workflow = parse_workflow(ui)
    graph = ExecGraph(workflow, object_info)
    emitted = list(graph.emitted())
    _check_classes(emitted, object_info)

    prompt: JSON = {}
    for exec_node in emitted:
        prompt[exec_node.exec_id] = {
            "inputs": _inputs(graph, exec_node, object_info, rng),
            "class_type": exec_node.node.type,
            "_meta": {
                "title": exec_node.node.title or display_name(exec_node.node.type, object_info)
            },
        }
    # Inputs that point at nodes which were not emitted (muted ones) are dropped, as the frontend does.
    for api_node in prompt.values():
        inputs = api_node["inputs"]
        for name in [key for key, value in inputs.items() if _dangling(value, prompt)]:
            del inputs[name]
    return prompt


def _dangling(value: Any, prompt: JSON) -> bool:
    return isinstance(value, list) and len(value) == 2 and value[0] not in prompt


def _check_classes(emitted: list[ExecNode], object_info: Mapping[str, Any]) -> None:
    missing = [exec_node for exec_node in emitted if exec_node.node.type not in object_info]
    if not missing:
        return
    types = sorted({exec_node.node.type for exec_node in missing})
    nodes = [
        {"id": exec_node.exec_id, "type": exec_node.node.type, "title": exec_node.node.title}
        for exec_node in missing
    ]
    listed = ", ".join(
        f"{node['id']} ({node['type']}" + (f", {node['title']!r})" if node["title"] else ")")
        for node in nodes
    )
    raise ConversionError(
        f"the workflow uses node types this server does not have: {', '.join(types)}; "
        f"nodes: {listed}",
        details={"missing_node_types": types, "nodes": nodes},
    )


def _wrap(value: Any) -> Any:
    """Arrays mean links in a prompt, so list-valued widgets travel boxed."""
    return {"__value__": value} if isinstance(value, list) else value


def _widget_values(
    graph: ExecGraph, exec_node: ExecNode, node_def: Mapping[str, Any], rng: random.Random
) -> JSON:
    node = exec_node.node
    stored = node.widgets_values
    if isinstance(stored, list):
        stored = migrate_values(node_def, stored)
    overrides = graph.overrides.get(exec_node.exec_id, {})
    values: JSON = {}
    for index, slot in enumerate(widget_layout(node.type, node_def)):
        if not slot.serialize:
            continue
        if slot.fixed:
            value = slot.default
        elif slot.name in overrides:
            value = overrides[slot.name]
        elif isinstance(stored, list) and index < len(stored):
            value = stored[index]
        elif isinstance(stored, dict) and slot.name in stored:
            value = stored[slot.name]
        else:
            value = slot.default
        if value is UNSET:
            continue
        if slot.dynamic_prompts and isinstance(value, str):
            value = process_dynamic_prompt(value, rng)
        values[slot.name] = _wrap(value)
    return values


def _inputs(
    graph: ExecGraph, exec_node: ExecNode, object_info: Mapping[str, Any], rng: random.Random
) -> JSON:
    node_def = object_info[exec_node.node.type]
    inputs = _widget_values(graph, exec_node, node_def if isinstance(node_def, dict) else {}, rng)
    for index, slot in enumerate(exec_node.inputs):
        resolved = graph.resolve_input(exec_node, index)
        if isinstance(resolved, Value):
            inputs[slot.name] = _wrap(resolved.value)
        elif isinstance(resolved, Ref):
            inputs[slot.name] = [resolved.node_id, resolved.slot]
    return inputs
