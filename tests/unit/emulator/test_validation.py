"""validate_prompt, without a server, against the 400 bodies real ComfyUI returned."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from comfyrun.comfy.emulator.objectinfo import NodeDefs, build, load_base
from comfyrun.comfy.validation import validate_prompt

MODELS = {
    "checkpoints": ["broken_for_test.safetensors", "random_sd15_for_protocol_tests.safetensors"]
}


@pytest.fixture(scope="module")
def defs() -> NodeDefs:
    return build(load_base(), MODELS, [])  # no input files


@pytest.fixture(scope="module")
def cases(shared_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (shared_dir / "comfy-protocol" / "post_prompt_errors.json").read_text()
    )
    return data


def _no_files(class_type: str, name: str, value: Any) -> bool | str:
    return f"Invalid image file: {value}"


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<tb>" if k == "traceback" else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


@pytest.mark.parametrize(
    "name",
    [
        "no_outputs",
        "unknown_class_type",
        "missing_class_type",
        "missing_required_input",
        "missing_widget_input",
        "value_smaller_than_min",
        "value_not_in_list",
        "wrong_type_value",
        "link_to_missing_node",
        "link_type_mismatch",
        "link_bad_output_index",
        "load_image_missing_file",
    ],
)
def test_rejections_match_comfyui_exactly(name: str, defs: NodeDefs, cases: dict[str, Any]) -> None:
    case = cases[name]
    verdict = validate_prompt(copy.deepcopy(case["request"]["json"]["prompt"]), defs, _no_files)
    assert not verdict.ok
    assert _scrub({"error": verdict.error, "node_errors": verdict.node_errors}) == _scrub(
        case["body"]
    )


def test_partially_valid_prompt_keeps_the_valid_output(
    defs: NodeDefs, cases: dict[str, Any]
) -> None:
    case = cases["one_output_ok_one_bad"]
    verdict = validate_prompt(copy.deepcopy(case["request"]["json"]["prompt"]), defs, _no_files)
    assert verdict.ok and verdict.outputs == ["2"]
    assert verdict.node_errors == case["body"]["node_errors"]


def test_partial_targets_limit_outputs(defs: NodeDefs, cases: dict[str, Any]) -> None:
    prompt = copy.deepcopy(cases["partial_execution_targets"]["request"]["json"]["prompt"])
    assert validate_prompt(prompt, defs, _no_files, ["4"]).outputs == ["4"]
    assert validate_prompt(prompt, defs, _no_files).outputs == ["3", "4"]


def test_widget_values_are_converted_in_place(defs: NodeDefs) -> None:
    prompt: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": "64", "height": 64.0, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": 7}},
    }
    assert validate_prompt(prompt, defs, _no_files).ok
    assert prompt["1"]["inputs"]["width"] == 64 and isinstance(prompt["1"]["inputs"]["height"], int)
    assert prompt["2"]["inputs"]["filename_prefix"] == "7"


def test_value_bigger_than_max_and_v3_combo_options(defs: NodeDefs) -> None:
    prompt: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 99999, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    verdict = validate_prompt(prompt, defs, _no_files)
    assert verdict.node_errors["1"]["errors"][0]["type"] == "value_bigger_than_max"
    assert (
        verdict.node_errors["1"]["errors"][0]["message"] == "Value 99999 bigger than max of 16384"
    )
    webm: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "SaveWEBM",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": "x",
                "codec": "h264",
                "fps": 24.0,
                "crf": 32.0,
            },
        },
    }
    error = validate_prompt(webm, defs, _no_files).node_errors["2"]["errors"][0]
    assert (
        error["type"] == "value_not_in_list"
        and error["details"] == "codec: 'h264' not in ['vp9', 'av1']"
    )


def test_inner_node_exception_is_reported_on_the_inner_node(defs: NodeDefs) -> None:
    prompt: dict[str, Any] = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["99", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    verdict = validate_prompt(prompt, defs, _no_files)
    assert verdict.node_errors["1"]["errors"][0]["type"] == "exception_during_inner_validation"
    assert verdict.node_errors["1"]["dependent_outputs"] == ["2"]


def test_a_prompt_that_is_not_a_dict_of_nodes_raises_like_comfyui(defs: NodeDefs) -> None:
    with pytest.raises(TypeError):
        validate_prompt([1, 2, 3], defs, _no_files)  # type: ignore[arg-type]
