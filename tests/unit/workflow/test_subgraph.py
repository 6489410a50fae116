"""Subgraphs (definitions.subgraphs) and legacy group nodes (extra.groupNodes)."""

from __future__ import annotations

from typing import Any

from tests.support.workflow import (
    JSON,
    OBJECT_INFO,
    inp,
    node,
    out,
    sg_link,
    subgraph,
    ui,
)

from comfyrun.core.workflow import convert_ui_to_api

BLUR = "11111111-0000-0000-0000-000000000001"
OUTER = "22222222-0000-0000-0000-000000000002"


def blur_subgraph(inner_mode: int = 0) -> JSON:
    """image, blur_radius (a widget), sigma (a widget) -> ImageInvert -> ImageBlur -> IMAGE."""
    return subgraph(
        BLUR,
        [
            node(
                3,
                "ImageInvert",
                inputs=[inp("image", "IMAGE", 1)],
                outputs=[out("IMAGE", "IMAGE", [2])],
                mode=inner_mode,
            ),
            node(
                4,
                "ImageBlur",
                inputs=[
                    inp("image", "IMAGE", 2),
                    inp("blur_radius", "INT", 3, widget=True),
                    inp("sigma", "FLOAT", 5, widget=True),
                ],
                outputs=[out("IMAGE", "IMAGE", [4])],
                widgets_values=[1, 2.5],
            ),
        ],
        [
            sg_link(1, -10, 0, 3, 0, "IMAGE"),
            sg_link(2, 3, 0, 4, 0, "IMAGE"),
            sg_link(3, -10, 1, 4, 1, "INT"),
            sg_link(5, -10, 2, 4, 2, "FLOAT"),
            sg_link(4, 4, 0, -20, 0, "IMAGE"),
        ],
        [("image", "IMAGE"), ("blur_radius", "INT"), ("sigma", "FLOAT")],
        [("IMAGE", "IMAGE")],
    )


def with_instance(
    *, instance_mode: int = 0, inner_mode: int = 0, radius_link: bool = False
) -> JSON:
    inputs = [inp("image", "IMAGE", 1)]
    nodes = [
        node(1, "LoadImage", outputs=[out("IMAGE", "IMAGE", [1])], widgets_values=["a.png"]),
        node(
            7,
            BLUR,
            inputs=inputs,
            outputs=[out("IMAGE", "IMAGE", [2])],
            widgets_values=[9, 0.75],
            mode=instance_mode,
        ),
        node(8, "SaveImage", inputs=[inp("images", "IMAGE", 2)], widgets_values=["sg"]),
    ]
    links: list[list[Any]] = [[1, 1, 0, 7, 0, "IMAGE"], [2, 7, 0, 8, 0, "IMAGE"]]
    if radius_link:
        nodes.append(
            node(2, "PrimitiveInt", outputs=[out("INT", "INT", [3])], widgets_values=[5, "fixed"])
        )
        inputs.append(inp("blur_radius", "INT", 3, widget=True))
        links.append([3, 2, 0, 7, 1, "INT"])
    return ui(nodes, links, definitions={"subgraphs": [blur_subgraph(inner_mode)]})


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
    group = {
        "nodes": [
            {
                "id": -1,
                "type": "ImageInvert",
                "index": 0,
                "mode": 0,
                "inputs": [{"name": "image", "type": "IMAGE"}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}],
            },
            {
                "id": -1,
                "type": "ImageBlur",
                "index": 1,
                "mode": 0,
                "inputs": [
                    {"name": "image", "type": "IMAGE"},
                    {"name": "blur_radius", "type": "INT", "widget": {"name": "blur_radius"}},
                    {"name": "sigma", "type": "FLOAT", "widget": {"name": "sigma"}},
                ],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}],
                "widgets_values": [1, 1],
            },
        ],
        "links": [[None, 0, 0, 0, 1, "IMAGE"], [0, 0, 1, 0, 2, "IMAGE"]],
        "external": [[1, 0, "IMAGE"]],
    }
    graph = ui(
        [
            node(1, "LoadImage", outputs=[out("IMAGE", "IMAGE", [5])]),
            node(
                5,
                "workflow>Blurry",
                inputs=[inp("image", "IMAGE", 5)],
                outputs=[out("IMAGE", "IMAGE", [4])],
                widgets_values=[3, 0.25],
            ),
            node(4, "SaveImage", inputs=[inp("images", "IMAGE", 4)], widgets_values=["gn"]),
        ],
        [[4, 5, 0, 4, 0, "IMAGE"], [5, 1, 0, 5, 0, "IMAGE"]],
        extra={"groupNodes": {"Blurry": group}},
    )
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert set(prompt) == {"1", "5:0", "5:1", "4"}
    assert prompt["5:0"]["inputs"] == {"image": ["1", 0]}
    assert prompt["5:1"]["inputs"] == {"image": ["5:0", 0], "blur_radius": 3, "sigma": 0.25}
    assert prompt["4"]["inputs"] == {"filename_prefix": "gn", "images": ["5:1", 0]}
