"""validate_prompt, without a server, against the 400 bodies real ComfyUI returned."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from comfyrun.comfy.emulator.objectinfo import NodeDefs, build, defs_of, load_base, prompt_classes
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


class _Reads:
    """The lists `defs_of` asked for."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def model_list(self, folder: str) -> list[str] | None:
        self.read.add(folder)
        return MODELS.get(folder)

    def images(self) -> list[str]:
        self.read.add("<input>")
        return []


def test_a_prompts_own_definitions_give_the_verdict_of_all_of_them(
    defs: NodeDefs, cases: dict[str, Any]
) -> None:
    """The emulator validates with `defs_of` the prompt's classes (as ComfyUI asks only its
    nodes' INPUT_TYPES): every captured case with a prompt, rejected or not, gets the verdict
    it gets against the whole object_info, and only the lists of its own inputs are read."""
    base = load_base()
    checked = 0
    for name, case in cases.items():
        body = case.get("request", {}).get("json", {})
        if "prompt" not in body:
            continue
        prompt, targets = body["prompt"], body.get("partial_execution_targets")
        reads = _Reads()
        own = defs_of(base, prompt_classes(prompt), reads.model_list, reads.images)
        try:
            whole = validate_prompt(copy.deepcopy(prompt), defs, _no_files, targets)
        except (TypeError, AttributeError) as error:
            with pytest.raises(type(error)):
                validate_prompt(copy.deepcopy(prompt), own, _no_files, targets)
            continue
        verdict = validate_prompt(copy.deepcopy(prompt), own, _no_files, targets)
        assert (verdict.ok, verdict.outputs) == (whole.ok, whole.outputs), name
        assert _scrub([verdict.error, verdict.node_errors]) == _scrub(
            [whole.error, whole.node_errors]
        ), name
        loaders = {
            "CheckpointLoaderSimple": {"checkpoints"},
            "LoadImage": {"<input>"},
            "VAELoader": {"vae"},
            "LoraLoader": {"loras"},
        }
        classes = prompt_classes(prompt)
        assert reads.read == set().union(*(loaders.get(c, set()) for c in classes)), name
        checked += 1
    assert checked >= 12


def test_a_prompt_without_model_or_image_inputs_reads_no_folder() -> None:
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        "3": {"class_type": ["not", "a", "name"], "inputs": {}},
    }
    base = load_base()

    def no_reading(*_: Any) -> Any:
        raise AssertionError("a folder was read")

    own = defs_of(base, prompt_classes(prompt), no_reading, no_reading)
    assert set(own) == {"EmptyImage", "SaveImage"}
    assert own["EmptyImage"] is base["EmptyImage"]  # not copied: nothing to fill
    assert prompt_classes([1, 2]) == set() and prompt_classes({"1": 3}) == set()
