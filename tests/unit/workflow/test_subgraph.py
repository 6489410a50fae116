"""Subgraphs (definitions.subgraphs) and legacy group nodes (extra.groupNodes)."""

from __future__ import annotations

from tests.support.workflow import (
    BLUR,
    OBJECT_INFO,
    blur_subgraph,
    group_graph,
    inp,
    node,
    out,
    sg_link,
    subgraph,
    ui,
    with_instance,
)

from comfyrun.core.workflow import convert_ui_to_api

OUTER = "22222222-0000-0000-0000-000000000002"


def test_inner_nodes_get_path_ids_and_instance_widget_values() -> None:
    prompt = convert_ui_to_api(with_instance(), OBJECT_INFO)
    assert set(prompt) == {"1", "7:3", "7:4", "8"}
    assert prompt["7:3"]["inputs"] == {"image": ["1", 0]}
    assert prompt["7:4"]["inputs"] == {"image": ["7:3", 0], "blur_radius": 9, "sigma": 0.75}
    assert prompt["7:4"]["_meta"] == {"title": "Image Blur"}
    assert prompt["8"]["inputs"] == {"filename_prefix": "sg", "images": ["7:4", 0]}


def test_a_linked_instance_input_overrides_the_promoted_widget() -> None:
    prompt = convert_ui_to_api(with_instance(radius_link=True), OBJECT_INFO)
    assert prompt["7:4"]["inputs"]["blur_radius"] == ["2", 0]
    assert prompt["7:4"]["inputs"]["sigma"] == 0.75


def test_a_muted_inner_node_is_dropped_inside_the_subgraph() -> None:
    prompt = convert_ui_to_api(with_instance(inner_mode=2), OBJECT_INFO)
    assert set(prompt) == {"1", "7:4", "8"}
    assert "image" not in prompt["7:4"]["inputs"]


def test_bypassed_inner_nodes_resolve_through_to_the_outer_producer() -> None:
    prompt = convert_ui_to_api(with_instance(inner_mode=4), OBJECT_INFO)
    assert prompt["7:4"]["inputs"]["image"] == ["1", 0]


def test_bypassing_an_instance_rewires_consumers_but_still_emits_inner_nodes() -> None:
    prompt = convert_ui_to_api(with_instance(instance_mode=4), OBJECT_INFO)
    assert set(prompt) == {"1", "7:3", "7:4", "8"}
    assert prompt["8"]["inputs"]["images"] == ["1", 0]


def test_muting_an_instance_changes_nothing() -> None:
    muted = convert_ui_to_api(with_instance(instance_mode=2), OBJECT_INFO)
    assert muted == convert_ui_to_api(with_instance(), OBJECT_INFO)


def test_nested_subgraphs_get_nested_ids() -> None:
    outer = subgraph(
        OUTER,
        [
            node(
                6,
                BLUR,
                inputs=[inp("image", "IMAGE", 5)],
                outputs=[out("IMAGE", "IMAGE", [7])],
                widgets_values=[4, 0.5],
            ),
            node(5, "SaveImage", inputs=[inp("images", "IMAGE", 7)], widgets_values=["in"]),
        ],
        [sg_link(5, -10, 0, 6, 0, "IMAGE"), sg_link(7, 6, 0, 5, 0, "IMAGE")],
        [("image", "IMAGE")],
        [],
    )
    graph = ui(
        [
            node(1, "LoadImage", outputs=[out("IMAGE", "IMAGE", [8])]),
            node(9, OUTER, inputs=[inp("image", "IMAGE", 8)]),
        ],
        [[8, 1, 0, 9, 0, "IMAGE"]],
        definitions={"subgraphs": [blur_subgraph(), outer]},
    )
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert set(prompt) == {"1", "9:6:3", "9:6:4", "9:5"}
    assert prompt["9:6:3"]["inputs"] == {"image": ["1", 0]}
    assert prompt["9:6:4"]["inputs"] == {"image": ["9:6:3", 0], "blur_radius": 4, "sigma": 0.5}
    assert prompt["9:5"]["inputs"] == {"filename_prefix": "in", "images": ["9:6:4", 0]}


def test_a_legacy_group_node_expands_to_indexed_inner_nodes() -> None:
    graph = group_graph()
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert set(prompt) == {"1", "5:0", "5:1", "4"}
    assert prompt["5:0"]["inputs"] == {"image": ["1", 0]}
    assert prompt["5:1"]["inputs"] == {"image": ["5:0", 0], "blur_radius": 3, "sigma": 0.25}
    assert prompt["4"]["inputs"] == {"filename_prefix": "gn", "images": ["5:1", 0]}
