"""Submission-time validation of a workflow whose model files come with the job (pure).

ComfyUI refuses a model name that is not in its lists yet; a job that brings the file with it
is fine. `accept_model_names` returns object_info in which every combo input the workflow sets
to one of the job's model names also offers that name, so ComfyUI's own validation passes for
those names and still checks everything else.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from comfyrun.models.specs import ModelRef


def accept_model_names(
    object_info: Mapping[str, Any], workflow: Mapping[str, Any], models: Iterable[ModelRef]
) -> dict[str, Any]:
    """A shallow copy of `object_info` whose affected node definitions are deep-copied and
    extended; `object_info` itself is not changed."""
    names = {m.name for m in models}
    out = dict(object_info)
    if not names:
        return out
    for node in workflow.values():
        if not isinstance(node, Mapping):
            continue
        class_type, inputs = node.get("class_type"), node.get("inputs")
        if not isinstance(inputs, Mapping) or class_type not in out:
            continue
        wanted = {k for k, v in inputs.items() if isinstance(v, str) and v in names}
        if not wanted:
            continue
        if out[class_type] is object_info.get(class_type):
            out[class_type] = copy.deepcopy(object_info[class_type])
        groups = (out[class_type].get("input") or {}).values()
        for group in groups:
            for key in wanted & set(group or {}):
                _offer(group[key], inputs[key])
    return out


def _offer(spec: Any, name: str) -> None:
    if not isinstance(spec, list) or not spec:
        return
    if isinstance(spec[0], list):
        if name not in spec[0]:
            spec[0].append(name)
    elif spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].setdefault("options", [])
        if name not in options:
            options.append(name)


__all__ = ["accept_model_names"]
