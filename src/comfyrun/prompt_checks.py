"""The checks a workflow passes before it is queued, with ComfyUI's own error shapes: the
shape, links and node types every backend would refuse (`validate_prompt`), ComfyUI's full
verdict against a backend's object_info (`validate_like_comfyui`), the error for a job no
backend can run, and a submission's values no store can hold (`refuse_unstorable`). Pure but for `check_prompt`, which moves a large workflow's check off the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from comfyrun.comfy.validation import validate_prompt as comfy_validate
from comfyrun.core.fit import Misfit
from comfyrun.core.job import JSON
from comfyrun.core.params import is_link
from comfyrun.errors import InvalidRequest, InvalidWorkflow, NoBackendFits
from comfyrun.jsontext import dumpb_within, encoded_holds_nul, holds_nul, nested_deeper

#: How deep a submitted value (a workflow, metadata, options, params) may nest objects and
#: lists (`{"a": [1]}` is 2 deep): far past any workflow's, and well within what every answer
#: that shows the value can render.
MAX_VALUE_DEPTH = 64


def refuse_unstorable(**fields: Any) -> None:
    """InvalidRequest (400) when one of `fields` holds what the queue cannot keep, or no answer
    show: a string with a NUL character (PostgreSQL cannot store one: it was a 503 store_error
    there, and a job accepted on SQLite), or objects and lists nested past `MAX_VALUE_DEPTH`
    (such a job was queued, its 201 a 500, and every listing that showed it a 500). No store
    takes them, and the client hears why (a 4xx in its dialect)."""
    raw = dumpb_within(fields, MAX_VALUE_DEPTH + 1)
    if raw is None:
        named = next(
            name for name, value in fields.items() if nested_deeper(value, MAX_VALUE_DEPTH)
        )
        raise InvalidRequest(
            f"{named} nests objects or lists more than {MAX_VALUE_DEPTH} levels deep",
            details={"field": named, "max_depth": MAX_VALUE_DEPTH},
        )
    if not encoded_holds_nul(raw):
        return
    named = next(name for name, value in fields.items() if holds_nul(value))
    raise InvalidRequest(
        f"{named} holds a NUL character (\\u0000), which the queue cannot store",
        details={"field": named},
    )


def has_asset_refs(value: Any) -> bool:
    """Whether `value` (a workflow) holds an asset reference anywhere (walked with a stack:
    it runs at every submission)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):  # most of a workflow's values: done with at once
            continue
        if isinstance(item, dict):
            if item.get("__type") == "core/ASSET":
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def no_backend_fits(unfit: Sequence[Misfit]) -> NoBackendFits:
    """The 422 (v2) / ComfyUI-shaped 400 for a job no backend can run, naming what is missing
    on which backend."""
    message = "no configured backend can run this job: " + "; ".join(u.describe() for u in unfit)
    node_errors: dict[str, JSON] = {}
    for u in unfit:
        for node_id, name, value in u.missing_values:
            node_errors.setdefault(node_id, {"errors": [], "dependent_outputs": []})
            node_errors[node_id]["errors"].append(
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: '{value}' not on backend {u.backend}",
                    "extra_info": {"input_name": name, "received_value": value},
                }
            )
    details = prompt_error("no_backend_fits", message, node_errors=node_errors)
    details["backends"] = [u.to_dict() for u in unfit]
    return NoBackendFits(message, details=details)


def prompt_error(
    kind: str, message: str, details: str = "", node_errors: JSON | None = None
) -> JSON:
    """ComfyUI's own validation error shape: {"error": {...}, "node_errors": {...}}."""
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": node_errors or {},
    }


def _node_error(class_type: str | None, kind: str, message: str, details: str) -> JSON:
    return {
        "errors": [{"type": kind, "message": message, "details": details, "extra_info": {}}],
        "dependent_outputs": [],
        "class_type": class_type,
    }


def validate_like_comfyui(
    prompt: Mapping[str, Any],
    object_info: Mapping[str, Any],
    targets: Sequence[str] | None = None,
) -> None:
    """ComfyUI's full verdict on `prompt` (types, ranges, combo lists, links, return types);
    raises InvalidWorkflow carrying ComfyUI's `error` and `node_errors` unchanged. Input files
    are not checked here: they live on the backend that will run the job. `targets`: the
    output nodes to run (`partial_execution_targets`), the only ones judged."""
    verdict = comfy_validate(
        _inputs_copied(prompt),
        dict(object_info),
        _files_checked_later,
        None if targets is None else list(targets),
    )
    if verdict.ok:
        return
    error = verdict.error or {}
    first = next(iter(verdict.node_errors.values()), None)
    reason = first["errors"][0] if first and first.get("errors") else error
    raise InvalidWorkflow(
        f"{error.get('message', 'invalid workflow')}: {reason.get('message', '')}"
        + (f" ({reason['details']})" if reason.get("details") else ""),
        details={"error": error, "node_errors": verdict.node_errors},
    )


def _inputs_copied(prompt: Mapping[str, Any]) -> dict[str, Any]:
    """`prompt` with each node's inputs in a dict of their own: ComfyUI's check converts input
    values in place (an INT's "5" to 5, a {"__value__": …} to its value) and changes nothing
    else, so this is all of the prompt it needs copied (a deep copy of a 40 KB workflow took
    ~1 ms)."""
    copied: dict[str, Any] = {}
    for node_id, node in prompt.items():
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            node = {**node, "inputs": dict(node["inputs"])}
        copied[node_id] = node
    return copied


#: Workflows up to this many nodes are checked on the event loop (a 7-node text-to-image
#: workflow takes ~0.1 ms, about what the hop to a thread and back costs); bigger ones in a
#: thread, so that a large workflow does not hold up the loop.
INLINE_CHECK_NODES = 16


async def check_prompt(
    workflow: JSON,
    object_info: JSON | None,
    *,
    placeholders: bool,
    targets: Sequence[str] | None = None,
) -> None:
    validate_prompt(workflow, object_info, targets)
    if object_info and not placeholders and not has_asset_refs(workflow):
        if len(workflow) <= INLINE_CHECK_NODES:
            validate_like_comfyui(workflow, object_info, targets)
        else:
            await asyncio.to_thread(validate_like_comfyui, workflow, object_info, targets)


def _files_checked_later(class_type: str, name: str, value: Any) -> bool:
    return True


def validate_prompt(
    prompt: Mapping[str, Any],
    object_info: Mapping[str, Any] | None,
    targets: Sequence[str] | None = None,
) -> None:
    """The checks ComfyUI would make that need no models: shape, links to existing nodes and,
    when `object_info` is known, node types, required inputs and at least one output node.
    Raises InvalidWorkflow whose details carry ComfyUI's error and node_errors shape."""
    node_errors: dict[str, JSON] = {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise InvalidWorkflow(
                f"node {node_id} has no class_type; is this an API-format prompt?",
                details=prompt_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                ),
            )
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise InvalidWorkflow(
                f"node {node_id}: inputs must be an object",
                details=prompt_error("invalid_prompt", "inputs must be an object", node_id),
            )
        class_type = node["class_type"]
        if object_info is not None and class_type not in object_info:
            raise InvalidWorkflow(
                f"node {node_id}: node type {class_type} does not exist on the backends",
                details=prompt_error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                ),
            )
        for name, value in inputs.items():
            if is_link(value) and str(value[0]) not in prompt:
                node_errors[str(node_id)] = _node_error(
                    class_type,
                    "exception_during_validation",
                    "Exception when validating node",
                    f"input {name} links to node {value[0]}, which is not in the prompt",
                )
        if object_info is not None:
            required = object_info[class_type].get("input", {}).get("required", {})
            missing = [n for n in required if n not in inputs]
            if missing:
                node_errors[str(node_id)] = _node_error(
                    class_type,
                    "required_input_missing",
                    "Required input is missing",
                    ", ".join(missing),
                )
    if node_errors:
        first = next(iter(node_errors))
        raise InvalidWorkflow(
            f"node {first}: {node_errors[first]['errors'][0]['details']}",
            details=prompt_error(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                node_errors=node_errors,
            ),
        )
    if object_info is not None and not any(
        object_info[n["class_type"]].get("output_node")
        for node_id, n in prompt.items()
        if targets is None or node_id in targets
    ):
        raise InvalidWorkflow(
            "the workflow has no output node (SaveImage, PreviewImage, …)",
            details=prompt_error("prompt_no_outputs", "Prompt has no outputs"),
        )


__all__ = [
    "INLINE_CHECK_NODES",
    "MAX_VALUE_DEPTH",
    "check_prompt",
    "has_asset_refs",
    "no_backend_fits",
    "prompt_error",
    "refuse_unstorable",
    "validate_like_comfyui",
    "validate_prompt",
]
