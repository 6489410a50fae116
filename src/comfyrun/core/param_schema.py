"""The JSON Schema of a ComfyUI input, from its object_info spec (pure, no I/O).

INT → integer and FLOAT → number (with `minimum`/`maximum`), STRING → string, BOOLEAN →
boolean, a list of options (COMBO, old or new style) → enum, default from the spec. Inputs with
an upload button (LoadImage's `image`, video/audio loaders) are *file* inputs, with a schema of
their own (an asset id, a URL, base64, or an object naming one of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

JSON = dict[str, Any]


FILE_OPTIONS: Mapping[str, str] = {
    "image_upload": "image",
    "animated_image_upload": "image",
    "video_upload": "video",
    "audio_upload": "audio",
}


def input_schema(spec: Sequence[Any]) -> JSON:
    """The JSON Schema of a value for an object_info input spec."""
    kind, options = spec_type(spec), spec_options(spec)
    schema: JSON
    if kind == "INT":
        schema = {"type": "integer"}
    elif kind == "FLOAT":
        schema = {"type": "number"}
    elif kind == "STRING":
        schema = {"type": "string"}
    elif kind == "BOOLEAN":
        schema = {"type": "boolean"}
    elif kind == "COMBO":
        schema = {"enum": combo_options(spec)}
        if all(isinstance(o, str) for o in schema["enum"]):
            schema["type"] = "string"
    else:
        schema = {}  # a socket type (MODEL, IMAGE…): any JSON value
    if kind in ("INT", "FLOAT"):
        for key, word in (("min", "minimum"), ("max", "maximum")):
            if isinstance(options.get(key), int | float) and not isinstance(options[key], bool):
                schema[word] = options[key]
    if "default" in options:
        schema["default"] = options["default"]
    elif kind == "COMBO" and schema["enum"]:
        schema["default"] = schema["enum"][0]
    return schema


def file_schema(kind: str) -> JSON:
    source = {
        "type": "object",
        "properties": {
            "asset_id": {"type": "string"},
            "url": {"type": "string", "format": "uri"},
            "data": {"type": "string", "contentEncoding": "base64"},
            "name": {"type": "string"},
        },
        "minProperties": 1,
        "additionalProperties": False,
    }
    return {
        "anyOf": [{"type": "string"}, source],
        "x-file": kind,
        "description": f"The {kind} file: an asset id, an http(s) URL or base64 data",
    }


def input_specs(node_def: Mapping[str, Any]) -> dict[str, Sequence[Any]]:
    """name → spec for required then optional inputs, in object_info's order."""
    section_map = node_def.get("input")
    sections = section_map if isinstance(section_map, Mapping) else {}
    order = node_def.get("input_order") if isinstance(node_def.get("input_order"), Mapping) else {}
    specs: dict[str, Sequence[Any]] = {}
    for section in ("required", "optional"):
        found = sections.get(section)
        if not isinstance(found, Mapping):
            continue
        listed = order.get(section) if isinstance(order, Mapping) else None
        names = listed if isinstance(listed, list) else list(found)
        for name in names:
            spec = found.get(name)
            if isinstance(spec, list | tuple) and spec:
                specs[name] = spec
    return specs


WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})


def spec_type(spec: Sequence[Any]) -> str:
    head = spec[0]
    return "COMBO" if isinstance(head, list | tuple) else str(head)


def spec_options(spec: Sequence[Any]) -> JSON:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec: Sequence[Any]) -> list[Any]:
    head = spec[0]
    if isinstance(head, list | tuple):
        return list(head)
    options = spec_options(spec).get("options")
    return list(options) if isinstance(options, list | tuple) else []


def file_kind(spec: Sequence[Any]) -> str | None:
    if spec_type(spec) != "COMBO":
        return None
    options = spec_options(spec)
    return next((kind for key, kind in FILE_OPTIONS.items() if options.get(key)), None)


def inferred_schema(default: Any) -> JSON:
    kind = json_type(default)
    return {} if kind in ("null", "object", "array") else {"type": kind}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return json_type(value) == kind


__all__ = [
    "FILE_OPTIONS",
    "WIDGET_TYPES",
    "combo_options",
    "file_kind",
    "file_schema",
    "inferred_schema",
    "input_schema",
    "input_specs",
    "is_type",
    "json_type",
    "spec_options",
    "spec_type",
]
