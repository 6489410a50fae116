"""A template compiled against the backends' node definitions: its API prompt, its typed
parameters, and whether it can run (`valid`, with the reasons when not)."""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyrun.comfy.validation import validate_prompt
from comfyrun.core.params import (
    Param,
    Problem,
    merge_decls,
    params_schema,
    parse_decls,
    resolve,
    title_decls,
)
from comfyrun.core.workflow import convert_ui_to_api, is_ui_workflow
from comfyrun.errors import ComfyrunError
from comfyrun.templates.folder import TemplateFiles

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    version: str
    prompt: JSON | None
    params: tuple[Param, ...] = ()
    description: str | None = None
    problems: tuple[Problem, ...] = ()
    #: False when there was no object_info to check it against (schema inferred)
    checked: bool = True
    source_format: str = "api"
    extra: JSON = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.prompt is not None and not self.problems

    @property
    def reason(self) -> str | None:
        return "; ".join(p.message for p in self.problems) if self.problems else None

    def schema(self) -> JSON:
        return params_schema(self.params)


def compile_template(files: TemplateFiles, object_info: Mapping[str, Any] | None) -> Template:
    """Parse, convert (UI format) and resolve the parameters of one template. Never raises:
    what is wrong ends up in `problems`."""
    if files.error is not None:
        return Template(files.name, files.version, None, problems=(Problem("", files.error),))
    raw = files.workflow
    if isinstance(raw, dict) and isinstance(raw.get("prompt"), dict) and "nodes" not in raw:
        raw = raw["prompt"]  # a saved /prompt body
    decls, description, problems = (
        parse_decls(files.params) if files.params is not None else ([], None, [])
    )
    problems = [Problem(f"/params_file{p.pointer}", p.message) for p in problems]
    fmt = "ui" if is_ui_workflow(raw) else "api"
    prompt: JSON | None
    if fmt == "ui":
        prompt = _convert(raw, object_info, problems)
    elif isinstance(raw, dict) and raw and all(_is_node(n) for n in raw.values()):
        prompt = {str(k): v for k, v in raw.items()}
    else:
        prompt = None
        problems.append(Problem("", "the workflow is neither an API prompt nor a UI workflow"))
    if prompt is None:
        return Template(
            files.name,
            files.version,
            None,
            description=description,
            problems=tuple(problems),
            source_format=fmt,
        )
    if object_info is not None:
        missing = sorted(
            {str(n["class_type"]) for n in prompt.values() if n["class_type"] not in object_info}
        )
        if missing:
            problems.append(
                Problem("", f"node types no backend has: {', '.join(missing)}", "missing_nodes")
            )
    resolved = resolve(merge_decls(title_decls(prompt), decls), prompt, object_info)
    params = resolved.params
    if object_info is not None and not problems:
        params = _check_like_comfyui(prompt, params, object_info, problems)
    return Template(
        files.name,
        files.version,
        prompt,
        params=params,
        description=description,
        problems=tuple(problems) + resolved.problems,
        checked=object_info is not None,
        source_format=fmt,
    )


def _check_like_comfyui(
    prompt: JSON,
    params: tuple[Param, ...],
    object_info: Mapping[str, Any],
    problems: list[Problem],
) -> tuple[Param, ...]:
    """ComfyUI's verdict on the template as it stands. A bad value in a parameter's input only
    takes that parameter's default away (callers must give it); any other error is a problem
    of the template (a missing model, a broken link…)."""
    try:
        verdict = validate_prompt(copy.deepcopy(prompt), dict(object_info), _files_later)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        problems.append(Problem("", f"ComfyUI cannot validate the workflow: {exc}"))
        return params
    if verdict.ok:
        return params
    targets = {(p.node, p.input): p for p in params}
    required: set[str] = set()
    for node_id, entry in verdict.node_errors.items():
        for error in entry.get("errors", []):
            name = (error.get("extra_info") or {}).get("input_name")
            param = targets.get((str(node_id), str(name)))
            if param is not None:
                required.add(param.name)
                continue
            detail = f" ({error['details']})" if error.get("details") else ""
            problems.append(
                Problem(
                    f"/prompt/{node_id}",
                    f"node {node_id} ({entry.get('class_type')}): {error.get('message')}{detail}",
                    "comfyui",
                )
            )
    if not verdict.node_errors and verdict.error:
        problems.append(Problem("", str(verdict.error.get("message")), "comfyui"))
    return tuple(_required(p) if p.name in required else p for p in params)


def _required(param: Param) -> Param:
    schema = {k: v for k, v in param.schema.items() if k != "default"}
    return dataclasses.replace(param, schema=schema, required=True)


def _files_later(class_type: str, name: str, value: Any) -> bool:
    return True  # input files live on the backend that runs the job


def _convert(
    raw: JSON, object_info: Mapping[str, Any] | None, problems: list[Problem]
) -> JSON | None:
    if object_info is None:
        problems.append(
            Problem("", "a UI-format template needs a ready backend to convert it", "no_backend")
        )
        return None
    try:
        # a fixed seed: the same files give the same prompt (dynamic prompts included)
        return convert_ui_to_api(raw, dict(object_info), rng=random.Random(0))
    except ComfyrunError as exc:
        problems.append(Problem("", f"cannot convert the UI workflow: {exc.message}"))
        return None


def _is_node(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and isinstance(node.get("class_type"), str)
        and isinstance(node.get("inputs", {}), dict)
    )


__all__ = ["Template", "compile_template"]
