"""Pointing a workflow at placed files: targets, names, asset references."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from comfyrun.errors import InputRejected, MissingAsset
from comfyrun.inputs import (
    InputLimits,
    find_asset_refs,
    parse_input_specs,
    point_workflow_at_inputs,
    validate_inputs,
)


def workflow() -> dict[str, Any]:
    return {
        "10": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "11": {"class_type": "LoadImage", "inputs": {"image": "photo.png [input]"}},
        "12": {"class_type": "LoadImage", "inputs": {"image": "other.png"}},
        "20": {"class_type": "LoadAudio", "inputs": {"audio": "voice.wav"}},
        "30": {
            "class_type": "LoadVideo",
            "inputs": {"file": {"__type": "core/ASSET", "info": {"id": "asset-1"}}},
        },
        "40": {"class_type": "ImageScale", "inputs": {"image": ["10", 0], "width": 64}},
    }


def specs(raw: list[dict[str, Any]]) -> Any:
    return parse_input_specs(raw, InputLimits())


def test_by_name_replaces_every_loader_holding_the_name() -> None:
    wf = workflow()
    before = copy.deepcopy(wf)
    out = point_workflow_at_inputs(
        wf,
        specs([{"name": "photo.png", "data": "aGk="}]),
        ["comfyrun/j/photo.png"],
        {"asset-1": "x"},
    )
    assert out["10"]["inputs"]["image"] == "comfyrun/j/photo.png"
    assert out["11"]["inputs"]["image"] == "comfyrun/j/photo.png"
    assert out["12"]["inputs"]["image"] == "other.png"
    assert out["40"]["inputs"]["image"] == ["10", 0]
    assert wf == before  # the input workflow is not modified


def test_target_sets_the_named_input() -> None:
    out = point_workflow_at_inputs(
        workflow(),
        specs([{"url": "https://e.com/v.wav", "node": "20", "input": "audio"}]),
        ["comfyrun/j/v.wav"],
        {"asset-1": "x"},
    )
    assert out["20"]["inputs"]["audio"] == "comfyrun/j/v.wav"


def test_target_without_input_picks_the_only_file_input() -> None:
    out = point_workflow_at_inputs(
        workflow(),
        specs([{"data": "aGk=", "node": "12"}]),
        ["comfyrun/j/input_0.png"],
        {"asset-1": "x"},
    )
    assert out["12"]["inputs"]["image"] == "comfyrun/j/input_0.png"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"data": "aGk=", "node": "99", "input": "image"}, "unknown_node"),
        ({"data": "aGk=", "node": "10", "input": "nope"}, "unknown_input"),
        ({"data": "aGk=", "node": "40"}, "ambiguous_input"),
    ],
)
def test_bad_targets_are_refused(raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(InputRejected) as caught:
        point_workflow_at_inputs(workflow(), specs([raw]), ["p"], {"asset-1": "x"})
    assert caught.value.details["reason"] == reason


def test_asset_references_are_resolved_anywhere_in_inputs() -> None:
    wf = workflow()
    wf["50"] = {
        "class_type": "Custom",
        "inputs": {"list": [{"__type": "core/ASSET", "info": {"id": "asset-2"}}]},
    }
    assert find_asset_refs(wf) == ["asset-1", "asset-2"]
    out = point_workflow_at_inputs(wf, [], [], {"asset-1": "a/1.mp4", "asset-2": "a/2.png"})
    assert out["30"]["inputs"]["file"] == "a/1.mp4"
    assert out["50"]["inputs"]["list"] == ["a/2.png"]


def test_unknown_asset_is_missing_asset() -> None:
    with pytest.raises(MissingAsset) as caught:
        point_workflow_at_inputs(workflow(), [], [], {})
    assert caught.value.code == "missing_asset"
    assert caught.value.details == {"asset_id": "asset-1", "node": "30"}


@pytest.mark.parametrize(
    "ref",
    [
        {"__type": "core/ASSET"},
        {"__type": "core/ASSET", "info": {}},
        {"__type": "core/ASSET", "info": {"id": 5}},
    ],
)
def test_malformed_asset_reference_is_missing_asset(ref: dict[str, Any]) -> None:
    with pytest.raises(MissingAsset):
        find_asset_refs({"1": {"class_type": "LoadImage", "inputs": {"image": ref}}})


def test_validate_inputs_checks_data_urls_targets_and_counts() -> None:
    limits = InputLimits(max_files=2)
    wf = workflow()
    validate_inputs(wf, [{"name": "photo.png", "data": "aGk="}], limits)
    with pytest.raises(InputRejected):  # 2 inputs + 1 asset reference
        validate_inputs(
            wf, [{"name": "a.png", "data": "aGk="}, {"name": "b.png", "data": "aGk="}], limits
        )
    with pytest.raises(InputRejected):
        validate_inputs(wf, [{"name": "photo.png", "data": "@@@"}], limits)
    with pytest.raises(InputRejected):
        validate_inputs(wf, [{"name": "photo.png", "url": "http://10.0.0.1/a.png"}], limits)
    with pytest.raises(InputRejected):
        validate_inputs(
            wf, [{"url": "https://e.com/a.png", "node": "77", "input": "image"}], limits
        )
