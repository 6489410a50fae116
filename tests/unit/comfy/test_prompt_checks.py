"""validate_like_comfyui: ComfyUI's verdict, given on a copy of what it converts (the nodes'
inputs); the caller's workflow is never changed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from tests.support.comfy import load

from comfyrun.errors import InvalidWorkflow
from comfyrun.prompt_checks import validate_like_comfyui


@pytest.fixture
def object_info(shared_dir: Path) -> dict[str, Any]:
    found: dict[str, Any] = load(shared_dir, "object_info_full.json")
    return found


def workflow(width: Any, prefix: Any = "x") -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": prefix},
        },
        "3": {"class_type": "EmptyImage", "inputs": {"width": "not checked: leads to no output"}},
    }


@pytest.mark.parametrize("width", [8, "8", {"__value__": "8"}, 8.0])
def test_valid_values_pass_and_the_workflow_is_unchanged(
    width: Any, object_info: dict[str, Any]
) -> None:
    given = workflow(width, {"__value__": "p"})
    before = copy.deepcopy(given)
    validate_like_comfyui(given, object_info)
    assert given == before


def test_an_invalid_value_is_refused_and_the_workflow_is_unchanged(
    object_info: dict[str, Any],
) -> None:
    given = workflow("wide")
    before = copy.deepcopy(given)
    with pytest.raises(InvalidWorkflow) as info:
        validate_like_comfyui(given, object_info)
    assert "1" in info.value.details["node_errors"]
    assert given == before
