"""A template compiled against the backends' node definitions: its API prompt, its typed
parameters, and whether it can run (`valid`, with the reasons when not)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    return Template(
        files.name,
        files.version,
        prompt,
        params=resolved.params,
        description=description,
        problems=tuple(problems) + resolved.problems,
        checked=object_info is not None,
        source_format=fmt,
    )


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
