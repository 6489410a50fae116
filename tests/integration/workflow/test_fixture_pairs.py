"""The converter against the real frontend: every fixture pair must match exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.integration.workflow.conftest import fixture_names, load_json

from comfyrun.core.workflow import convert_ui_to_api, is_api_prompt, is_ui_workflow
from comfyrun.errors import ConversionError


def test_the_fixture_folder_holds_pairs(fixtures_dir: Path) -> None:
    assert len(fixture_names(fixtures_dir.parent)) >= 90


def test_pair_converts_exactly_as_the_frontend_did(
    pair_name: str, fixtures_dir: Path, object_info: dict[str, Any]
) -> None:
    ui_path = fixtures_dir / f"{pair_name}.ui.json"
    if not ui_path.is_file():
        pytest.fail(f"no conversion fixtures under {fixtures_dir}")
    ui = load_json(ui_path)
    expected = load_json(fixtures_dir / f"{pair_name}.api.json")
    assert is_ui_workflow(ui) and not is_api_prompt(ui)
    prompt = convert_ui_to_api(ui, object_info)
    assert is_api_prompt(prompt)
    assert prompt == expected


def test_the_negative_example_is_refused_naming_the_unknown_nodes(
    fixtures_dir: Path, object_info: dict[str, Any]
) -> None:
    ui = load_json(fixtures_dir / "negative" / "video_wan2_2_14B_animate.ui.json")
    frontend = load_json(fixtures_dir / "negative" / "video_wan2_2_14B_animate.api.json")
    # The frontend emitted these with class_type null; they are exactly what we must name.
    unknown_ids = sorted(key for key, node in frontend.items() if node["class_type"] is None)
    with pytest.raises(ConversionError) as caught:
        convert_ui_to_api(ui, object_info)
    details = caught.value.details
    assert sorted(node["id"] for node in details["nodes"]) == unknown_ids
    assert details["missing_node_types"] == sorted(
        {
            "PixelPerfectResolution",
            "DownloadAndLoadSAM2Model",
            "PointsEditor",
            "DWPreprocessor",
            "Sam2Segmentation",
            "DrawMaskOnImage",
            "BlockifyMask",
        }
    )
    for type_name in details["missing_node_types"]:
        assert type_name in caught.value.message


def test_the_negative_example_converts_once_its_custom_nodes_exist(
    fixtures_dir: Path, object_info: dict[str, Any]
) -> None:
    """With stand-in definitions the rest of the graph matches the frontend's output."""
    ui = load_json(fixtures_dir / "negative" / "video_wan2_2_14B_animate.ui.json")
    frontend = load_json(fixtures_dir / "negative" / "video_wan2_2_14B_animate.api.json")
    subgraph_ids = {subgraph["id"] for subgraph in ui["definitions"]["subgraphs"]}
    stand_ins = {
        node["type"]: {"input": {}, "input_order": {}, "output": [], "display_name": node["type"]}
        for node in ui["nodes"]
        if node["type"] not in object_info
        and node["type"] not in subgraph_ids
        and node["type"] not in ("Note", "MarkdownNote", "PrimitiveNode", "Reroute")
    }
    prompt = convert_ui_to_api(ui, {**object_info, **stand_ins})
    known = {key: node for key, node in frontend.items() if node["class_type"] is not None}
    assert {key: prompt[key] for key in known} == known
    assert sorted(set(prompt) - set(known)) == sorted(set(frontend) - set(known))
