"""Typed parameters of a workflow template (pure, no I/O).

A template is an API prompt plus named parameters, each pointing at one node input. Rules:

- a parameter's JSON Schema comes from ComfyUI's object_info for its input: INT → integer,
  FLOAT → number (both with minimum/maximum), STRING → string, BOOLEAN → boolean, a list of
  options (COMBO) → enum; its default is the value the template holds (else object_info's);
- an input with an upload button (LoadImage's `image`, video/audio loaders) is a *file*
  parameter: an asset id, an http(s) URL or base64 (a `data:` URI or bare), or an object with
  exactly one of `asset_id`, `url`, `data`; it becomes one of the job's `inputs`;
- without object_info the schema is inferred from the default's JSON type (no ranges/options);
- `check_values` reports every problem at once, each with the JSON pointer of the offending
  value, and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfyrun.core.param_schema import (
    WIDGET_TYPES,
    file_kind,
    file_schema,
    inferred_schema,
    input_schema,
    input_specs,
    is_type,
    json_type,
    spec_options,
    spec_type,
)

JSON = dict[str, Any]

#: Option keys of an input spec that make it a file input, and the kind of file.
#: Node titles that declare a parameter: `$name` (the node's first widget input) or
#: `$name.input`.
TITLE_PARAM = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_-]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?$")
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class ParamDecl:
    """A parameter as declared: in NAME.params.json or by a `$name` node title."""

    name: str
    node: str
    input: str | None  # None: the node's first widget input (title declarations)
    default: Any = None
    has_default: bool = False
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Param:
    """A parameter resolved against the prompt: its target, schema and default."""

    name: str
    node: str
    input: str
    schema: JSON
    file_kind: str | None = None  # "image" | "video" | "audio" for file parameters
    required: bool = False

    @property
    def default(self) -> Any:
        return self.schema.get("default")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a template or a set of values; `pointer` is a JSON pointer."""

    pointer: str
    message: str
    kind: str = "invalid"

    def to_dict(self) -> JSON:
        return {"pointer": self.pointer, "message": self.message, "type": self.kind}


@dataclass(frozen=True, slots=True)
class Resolved:
    """The parameters of a template, or why some could not be resolved."""

    params: tuple[Param, ...] = ()
    problems: tuple[Problem, ...] = ()

    def schema(self) -> JSON:
        """The JSON Schema of a params object."""
        return params_schema(self.params)


@dataclass(frozen=True, slots=True)
class FileValue:
    """A file parameter's value, as one entry of a job's `inputs`."""

    node: str
    input: str
    source: str  # "asset_id" | "url" | "data"
    value: str
    name: str | None = None

    def to_input(self) -> JSON:
        entry: JSON = {"node": self.node, "input": self.input, self.source: self.value}
        if self.name is not None:
            entry["name"] = self.name
        return entry


@dataclass(frozen=True, slots=True)
class Applied:
    """A prompt with values filled in, and the files to place for it."""

    prompt: JSON
    inputs: tuple[JSON, ...] = ()
    values: JSON = field(default_factory=dict)  # the plain (non-file) values used


# declarations ----------------------------------------------------------------------------------


def parse_decls(raw: Any) -> tuple[list[ParamDecl], str | None, list[Problem]]:
    """(declarations, template description, problems) from a parsed NAME.params.json."""
    if not isinstance(raw, Mapping):
        return [], None, [Problem("", "the params file must be a JSON object")]
    decls: list[ParamDecl] = []
    problems: list[Problem] = []
    description = raw.get("description") if isinstance(raw.get("description"), str) else None
    for name, spec in raw.items():
        if name == "description" and isinstance(spec, str):
            continue
        where = f"/{_escape(name)}"
        if not PARAM_NAME.match(name):
            problems.append(Problem(where, f"{name!r} is not a valid parameter name"))
            continue
        if not isinstance(spec, Mapping) or not isinstance(spec.get("node"), str | int):
            problems.append(Problem(where, 'a parameter needs {"node": id, "input": name}'))
            continue
        input_name = spec.get("input")
        if input_name is not None and not isinstance(input_name, str):
            problems.append(Problem(f"{where}/input", "input must be a string"))
            continue
        desc = spec.get("description")
        decls.append(
            ParamDecl(
                name=name,
                node=str(spec["node"]),
                input=input_name,
                default=spec.get("default"),
                has_default="default" in spec,
                description=desc if isinstance(desc, str) else None,
            )
        )
    return decls, description, problems


def title_decls(prompt: Mapping[str, Any]) -> list[ParamDecl]:
    """Parameters declared by node titles (`_meta.title` of `$prompt` or `$seed.noise_seed`)."""
    decls = []
    for node_id, node in prompt.items():
        meta = node.get("_meta") if isinstance(node, Mapping) else None
        title = meta.get("title") if isinstance(meta, Mapping) else None
        match = TITLE_PARAM.match(title.strip()) if isinstance(title, str) else None
        if match:
            decls.append(ParamDecl(name=match[1], node=str(node_id), input=match[2]))
    return decls


def merge_decls(by_title: Sequence[ParamDecl], by_file: Sequence[ParamDecl]) -> list[ParamDecl]:
    """File declarations win over title ones of the same name."""
    merged = {d.name: d for d in by_title}
    merged.update({d.name: d for d in by_file})
    return list(merged.values())


# resolution ------------------------------------------------------------------------------------


def resolve(
    decls: Sequence[ParamDecl],
    prompt: Mapping[str, Any],
    object_info: Mapping[str, Any] | None,
) -> Resolved:
    """Each declaration checked against the prompt (and object_info) and given its schema."""
    params: list[Param] = []
    problems: list[Problem] = []
    for decl in decls:
        where = f"/parameters/{_escape(decl.name)}"
        node = prompt.get(decl.node)
        if not isinstance(node, Mapping):
            problems.append(Problem(where, f"node {decl.node} is not in the workflow"))
            continue
        class_type = str(node.get("class_type"))
        raw_inputs = node.get("inputs")
        inputs: Mapping[str, Any] = raw_inputs if isinstance(raw_inputs, Mapping) else {}
        node_def = object_info.get(class_type) if object_info is not None else None
        if object_info is not None and not isinstance(node_def, Mapping):
            problems.append(
                Problem(where, f"node type {class_type} does not exist on the backends")
            )
            continue
        specs = input_specs(node_def) if isinstance(node_def, Mapping) else {}
        input_name = decl.input or _first_widget(inputs, specs)
        if input_name is None:
            problems.append(Problem(where, f"node {decl.node} ({class_type}) has no widget input"))
            continue
        if specs and input_name not in specs:
            problems.append(
                Problem(where, f"node {decl.node} ({class_type}) has no input {input_name!r}")
            )
            continue
        current = inputs.get(input_name)
        if is_link(current):
            problems.append(
                Problem(where, f"input {input_name} of node {decl.node} is a link, not a value")
            )
            continue
        if decl.has_default:
            default, present = decl.default, True
        else:
            default, present = _unbox(current), input_name in inputs
        spec = specs.get(input_name)
        params.append(_param(decl, input_name, spec, default, present))
    return Resolved(params=tuple(params), problems=tuple(problems))


def _param(
    decl: ParamDecl, input_name: str, spec: Sequence[Any] | None, default: Any, present: bool
) -> Param:
    kind = file_kind(spec) if spec is not None else None
    if kind is not None:
        schema = file_schema(kind)
        if present and isinstance(default, str):
            schema["default"] = default
    else:
        schema = input_schema(spec) if spec is not None else inferred_schema(default)
        if present:
            schema["default"] = default
    if decl.description:
        schema["description"] = decl.description
    elif spec is not None and isinstance(spec_options(spec).get("tooltip"), str):
        schema["description"] = spec_options(spec)["tooltip"]
    schema["x-node"] = decl.node
    schema["x-input"] = input_name
    required = "default" not in schema
    return Param(decl.name, decl.node, input_name, schema, kind, required)


def params_schema(params: Sequence[Param]) -> JSON:
    return {
        "type": "object",
        "properties": {p.name: dict(p.schema) for p in params},
        "required": [p.name for p in params if p.required],
        "additionalProperties": False,
    }


# checking and applying ---------------------------------------------------------------------


def check_values(params: Sequence[Param], values: Any, *, base: str = "/params") -> list[Problem]:
    """Every problem of `values` against the parameters, with JSON pointers under `base`."""
    if not isinstance(values, Mapping):
        return [Problem(base, "params must be a JSON object", "type")]
    by_name = {p.name: p for p in params}
    problems = [
        Problem(f"{base}/{_escape(str(k))}", f"unknown parameter {k!r}", "unknown")
        for k in values
        if k not in by_name
    ]
    for p in params:
        where = f"{base}/{_escape(p.name)}"
        if p.name not in values:
            if p.required:
                problems.append(Problem(where, f"{p.name} is required", "required"))
            continue
        problems += _check_one(p, values[p.name], where)
    return problems


def _check_one(p: Param, value: Any, where: str) -> list[Problem]:
    if p.file_kind is not None:
        return _check_file(value, where)
    schema = p.schema
    kind = schema.get("type")
    if "enum" in schema:
        if value not in schema["enum"] or isinstance(value, bool) != _has_bool(schema["enum"]):
            shown = ", ".join(map(repr, schema["enum"][:20]))
            more = "…" if len(schema["enum"]) > 20 else ""
            return [Problem(where, f"{value!r} is not one of {shown}{more}", "enum")]
        return []
    if kind is None:
        return []
    if not is_type(value, kind):
        return [Problem(where, f"expected {_article(kind)}, got {json_type(value)}", "type")]
    problems = []
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(Problem(where, f"{value} is less than {schema['minimum']}", "minimum"))
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(Problem(where, f"{value} is more than {schema['maximum']}", "maximum"))
    return problems


def _check_file(value: Any, where: str) -> list[Problem]:
    if isinstance(value, str):
        return [] if value else [Problem(where, "a file reference must not be empty", "type")]
    if not isinstance(value, Mapping):
        return [Problem(where, "expected an asset id, a URL, base64 data or an object", "type")]
    problems = [
        Problem(f"{where}/{_escape(str(k))}", f"unknown field {k!r}", "unknown")
        for k in value
        if k not in ("asset_id", "url", "data", "name")
    ]
    sources = [k for k in ("asset_id", "url", "data") if k in value]
    if len(sources) != 1:
        problems.append(Problem(where, "needs exactly one of asset_id, url or data", "file"))
    for key in ("asset_id", "url", "data", "name"):
        if key in value and not isinstance(value[key], str):
            problems.append(Problem(f"{where}/{key}", "must be a string", "type"))
    return problems


def apply_values(
    prompt: Mapping[str, Any], params: Sequence[Param], values: Mapping[str, Any]
) -> Applied:
    """`prompt` with `values` (already checked) set; file values become inputs. The nodes a
    parameter sets are copied; the others are shared with `prompt` (treat both as frozen)."""
    out: JSON = dict(prompt)
    copied: set[str] = set()
    inputs: list[JSON] = []
    plain: JSON = {}

    def set_input(p: Param, value: Any) -> None:
        if p.node not in copied:
            node = dict(out[p.node])
            node["inputs"] = dict(node["inputs"])
            out[p.node] = node
            copied.add(p.node)
        out[p.node]["inputs"][p.input] = _box(value)

    for p in params:
        if p.name not in values:
            if p.file_kind is None and "default" in p.schema:
                set_input(p, p.schema["default"])
            continue
        value = values[p.name]
        if p.file_kind is not None:
            inputs.append(file_value(p, value).to_input())
            continue
        if p.schema.get("type") == "integer" and isinstance(value, float):
            value = int(value)
        set_input(p, value)
        plain[p.name] = value
    return Applied(prompt=out, inputs=tuple(inputs), values=plain)


def file_value(p: Param, value: Any) -> FileValue:
    """A file parameter's value (checked) as a source: objects name theirs; strings are told
    apart by their look (http(s) URL, `data:` URI, an asset id, else base64)."""
    if isinstance(value, Mapping):
        source = next(k for k in ("asset_id", "url", "data") if k in value)
        return FileValue(p.node, p.input, source, str(value[source]), value.get("name"))
    text = str(value)
    if text.startswith(("http://", "https://")):
        return FileValue(p.node, p.input, "url", text)
    if text.startswith("data:") or not _looks_like_asset_id(text):
        return FileValue(p.node, p.input, "data", text, f"{p.name}.{_EXT[p.file_kind or '']}")
    return FileValue(p.node, p.input, "asset_id", text)


# helpers -------------------------------------------------------------------------------------

_EXT = {"image": "png", "video": "mp4", "audio": "wav", "": "bin"}
_ASSET_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def _looks_like_asset_id(text: str) -> bool:
    # base64 of a real file is long; ids are short tokens without '+', '/' or '='
    return bool(_ASSET_ID.match(text))


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _first_widget(inputs: Mapping[str, Any], specs: Mapping[str, Sequence[Any]]) -> str | None:
    """The first input that holds a value (object_info's order when known)."""
    names = [n for n in specs if spec_type(specs[n]) in WIDGET_TYPES] if specs else list(inputs)
    for name in names:
        if not is_link(inputs.get(name)):
            return name
    return None


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _has_bool(options: Sequence[Any]) -> bool:
    return any(isinstance(o, bool) for o in options)


def is_link(value: Any) -> bool:
    """A connection in an API-format workflow: [source node id, output index]."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _unbox(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def _box(value: Any) -> Any:
    return {"__value__": value} if isinstance(value, list) else value


__all__ = [
    "Applied",
    "FileValue",
    "Param",
    "ParamDecl",
    "Problem",
    "Resolved",
    "apply_values",
    "check_values",
    "file_value",
    "is_link",
    "merge_decls",
    "params_schema",
    "parse_decls",
    "resolve",
    "title_decls",
]
