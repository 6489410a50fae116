"""Parameter schemas from ComfyUI's object_info (the captured one, as the emulator packages it),
value checks with JSON pointers, and applying values to a prompt."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from comfyrun.comfy.emulator.objectinfo import load_base
from comfyrun.core.param_schema import input_schema
from comfyrun.core.params import (
    ParamDecl,
    apply_values,
    check_values,
    parse_decls,
    resolve,
    title_decls,
)

JSON = dict[str, Any]


@cache
def captured() -> JSON:
    """The captured ComfyUI 0.3.64 object_info (packaged with the emulator)."""
    return load_base()


def spec(node: str, name: str) -> Any:
    inputs = captured()[node]["input"]
    return inputs.get("required", {}).get(name) or inputs["optional"][name]


def test_int_input_gives_an_integer_with_its_range_and_default() -> None:
    assert input_schema(spec("KSampler", "steps")) == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10000,
        "default": 20,
    }


def test_float_input_gives_a_number_with_its_range() -> None:
    schema = input_schema(spec("KSampler", "cfg"))
    assert schema == {"type": "number", "minimum": 0.0, "maximum": 100.0, "default": 8.0}


def test_string_input_gives_a_string() -> None:
    assert input_schema(spec("CLIPTextEncode", "text")) == {"type": "string"}
    assert input_schema(spec("SaveImage", "filename_prefix"))["default"] == "ComfyUI"


def test_boolean_input_gives_a_boolean() -> None:
    schema = input_schema(spec("InpaintModelConditioning", "noise_mask"))
    assert schema == {"type": "boolean", "default": True}


def test_combo_input_gives_an_enum_of_its_options() -> None:
    schema = input_schema(spec("KSampler", "sampler_name"))
    assert schema["type"] == "string" and "euler" in schema["enum"]
    assert schema["default"] == schema["enum"][0]
    ckpt = input_schema(spec("CheckpointLoaderSimple", "ckpt_name"))
    assert ckpt["enum"] == captured()["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]


def t2i() -> JSON:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a cat", "clip": ["4", 1]},
            "_meta": {"title": "$prompt"},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": 5, "steps": 20, "cfg": 7.5, "model": ["4", 0]},
            "_meta": {"title": "$steps.steps"},
        },
        "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    }


def resolved_t2i() -> Any:
    decls, _, problems = parse_decls(
        {
            "seed": {"node": "3", "input": "seed", "description": "noise"},
            "cfg": {"node": 3, "input": "cfg", "default": 6.0},
            "photo": {"node": "10", "input": "image"},
        }
    )
    assert problems == []
    return resolve([*title_decls(t2i()), *decls], t2i(), captured())


def test_titles_and_params_files_declare_parameters() -> None:
    result = resolved_t2i()
    assert result.problems == ()
    by_name = {p.name: p for p in result.params}
    assert (by_name["prompt"].input, by_name["prompt"].default) == ("text", "a cat")
    assert (by_name["steps"].input, by_name["steps"].default) == ("steps", 20)
    assert by_name["seed"].schema["description"] == "noise" and by_name["seed"].default == 5
    assert by_name["cfg"].default == 6.0  # the params file's default wins
    assert by_name["photo"].file_kind == "image"
    assert result.schema()["additionalProperties"] is False


def test_every_problem_is_reported_with_its_pointer() -> None:
    params = resolved_t2i().params
    problems = check_values(
        params,
        {"seed": -3, "steps": 2.5, "cfg": True, "prompt": 7, "extra": 1, "photo": 5},
    )
    assert {p.pointer: p.kind for p in problems} == {
        "/params/extra": "unknown",
        "/params/seed": "minimum",
        "/params/steps": "type",
        "/params/cfg": "type",
        "/params/prompt": "type",
        "/params/photo": "type",
    }
    assert check_values(params, [1])[0].pointer == "/params"
    assert check_values(params, {"seed": 1, "steps": 3.0, "photo": "https://x/y.png"}) == []


def test_applying_values_sets_inputs_and_turns_files_into_inputs() -> None:
    params = resolved_t2i().params
    applied = apply_values(
        t2i(), params, {"prompt": "a fox", "steps": 3.0, "photo": "https://example.com/a.png"}
    )
    assert applied.prompt["6"]["inputs"]["text"] == "a fox"
    assert (
        applied.prompt["3"]["inputs"]["steps"] == 3 and applied.prompt["3"]["inputs"]["cfg"] == 6.0
    )
    assert applied.inputs == ({"node": "10", "input": "image", "url": "https://example.com/a.png"},)
    assert t2i()["6"]["inputs"]["text"] == "a cat"  # the template is not changed
    data = apply_values(t2i(), params, {"photo": "iVBORw0KGgo" + "A" * 80}).inputs[0]
    assert data["data"].startswith("iVBOR") and data["name"] == "photo.png"
    asset = apply_values(t2i(), params, {"photo": {"asset_id": "abc123def456"}}).inputs[0]
    assert asset == {"node": "10", "input": "image", "asset_id": "abc123def456"}


@pytest.mark.parametrize(
    ("decl", "message"),
    [
        (ParamDecl("x", "99", "text"), "node 99 is not in the workflow"),
        (ParamDecl("x", "6", "nope"), "has no input 'nope'"),
        (ParamDecl("x", "6", "clip"), "is a link"),
    ],
)
def test_declarations_that_do_not_fit_are_problems(decl: ParamDecl, message: str) -> None:
    result = resolve([decl], t2i(), captured())
    assert result.params == () and message in result.problems[0].message


def test_without_object_info_the_schema_comes_from_the_default() -> None:
    result = resolve(title_decls(t2i()), t2i(), None)
    assert {p.name: p.schema["type"] for p in result.params} == {
        "prompt": "string",
        "steps": "integer",
    }


def test_params_file_shape_problems() -> None:
    _, _, problems = parse_decls({"ok": {"node": "1"}, "bad name": {"node": "1"}, "x": 3})
    assert [p.pointer for p in problems] == ["/bad name", "/x"]
    assert parse_decls([])[2][0].message == "the params file must be a JSON object"
