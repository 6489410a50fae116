"""Refusals: unknown node classes and malformed graphs raise ConversionError, nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.workflow import (
    OBJECT_INFO,
    group_graph,
    inp,
    node,
    out,
    txt2img,
    ui,
    with_instance,
)

from comfyrun.core.workflow import convert_ui_to_api
from comfyrun.errors import ConversionError, InvalidRequest


def test_unknown_node_types_are_refused_with_every_node_named() -> None:
    graph = ui(
        [
            node(1, "LoadImage", outputs=[out("IMAGE", "IMAGE", [1])]),
            node(2, "FancyUpscale", inputs=[inp("image", "IMAGE", 1)], title="Upscale!"),
            node(3, "FancyUpscale"),
            node(4, "OtherCustom"),
            node(5, "MutedCustom", mode=2),
        ],
        [[1, 1, 0, 2, 0, "IMAGE"]],
    )
    with pytest.raises(ConversionError) as caught:
        convert_ui_to_api(graph, OBJECT_INFO)
    error = caught.value
    assert isinstance(error, InvalidRequest)
    assert error.details == {
        "missing_node_types": ["FancyUpscale", "OtherCustom"],
        "nodes": [
            {"id": "2", "type": "FancyUpscale", "title": "Upscale!"},
            {"id": "3", "type": "FancyUpscale", "title": None},
            {"id": "4", "type": "OtherCustom", "title": None},
        ],
    }
    for word in ("FancyUpscale", "OtherCustom", "2", "Upscale!"):
        assert word in error.message


@pytest.mark.parametrize(
    ("workflow", "needle"),
    [
        ([], "JSON object"),
        ({"nodes": {}, "links": []}, "must be lists"),
        ({"nodes": [{"id": 1}], "links": []}, "needs an id and a type"),
        ({"nodes": [{"id": 1, "type": "X"}, {"id": 1, "type": "X"}], "links": []}, "duplicate"),
        ({"nodes": [], "links": [[1, 2]]}, "malformed link"),
        ({"nodes": [], "links": ["x"]}, "malformed link"),
        ({"nodes": [], "links": [{"id": 1}]}, "malformed link"),
        ({"nodes": [], "links": [[1, 1, "a", 2, 0, "IMAGE"]]}, "integer"),
        ({"nodes": [], "links": [[1, 1, -1, 2, 0, "IMAGE"]]}, "origin_slot must not be negative"),
        ({"nodes": [], "links": [[1, 1, 0, 2, "-3", "IMAGE"]]}, "target_slot must not be negative"),
        (
            {
                "nodes": [],
                "links": [
                    {
                        "id": 1,
                        "origin_id": 1,
                        "origin_slot": -(10**20),
                        "target_id": 2,
                        "target_slot": 0,
                    }
                ],
            },
            "must not be negative",
        ),
        ({"nodes": [{"id": 1, "type": "X", "inputs": "no"}], "links": []}, "must be lists"),
        ({"nodes": [{"id": 1, "type": "X", "widgets_values": 3}], "links": []}, "widgets_values"),
    ],
)
def test_malformed_graphs_are_refused(workflow: Any, needle: str) -> None:
    with pytest.raises(ConversionError, match=needle):
        convert_ui_to_api(workflow, OBJECT_INFO)


@pytest.mark.parametrize("slot", [-1, -100, -(10**20)])
@pytest.mark.parametrize("end", [2, 4])  # a link's origin_slot, its target_slot
def test_a_negative_slot_in_a_real_graph_is_refused(slot: int, end: int) -> None:
    """Found by mutating the real frontend's workflows: a negative slot indexed a node's
    inputs or outputs from the end, or past it (IndexError: a 500 for the submission)."""
    for index in range(len(txt2img()["links"])):
        graph = txt2img()
        graph["links"][index][end] = slot
        with pytest.raises(ConversionError, match="must not be negative"):
            convert_ui_to_api(graph, OBJECT_INFO)


def test_an_input_using_an_undefined_link_is_refused() -> None:
    graph = ui([node(1, "PreviewImage", inputs=[inp("images", "IMAGE", 42)])], [])
    with pytest.raises(ConversionError, match="link 42"):
        convert_ui_to_api(graph, OBJECT_INFO)


def test_a_link_from_a_missing_node_is_refused() -> None:
    graph = ui(
        [node(1, "PreviewImage", inputs=[inp("images", "IMAGE", 1)])], [[1, 99, 0, 1, 0, "IMAGE"]]
    )
    with pytest.raises(ConversionError, match="node 99"):
        convert_ui_to_api(graph, OBJECT_INFO)


def test_a_reroute_loop_is_refused_not_followed_forever() -> None:
    graph = ui(
        [
            node(1, "Reroute", inputs=[inp("", "*", 2)], outputs=[out("", "*", [1, 3])]),
            node(2, "Reroute", inputs=[inp("", "*", 1)], outputs=[out("", "*", [2])]),
            node(3, "PreviewImage", inputs=[inp("images", "IMAGE", 3)]),
        ],
        [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 1, 0, 3, 0, "IMAGE"]],
    )
    with pytest.raises(ConversionError, match="circular"):
        convert_ui_to_api(graph, OBJECT_INFO)


def test_a_subgraph_that_contains_itself_is_refused() -> None:
    loop = {
        "id": "loop",
        "inputs": [],
        "outputs": [],
        "links": [],
        "nodes": [{"id": 1, "type": "loop"}],
    }
    graph = ui([node(1, "loop")], [], definitions={"subgraphs": [loop]})
    with pytest.raises(ConversionError, match="nested"):
        convert_ui_to_api(graph, OBJECT_INFO)


def test_subgraphs_that_multiply_past_the_limit_are_refused() -> None:
    # Each level holds ten instances of the next: 10**6 inner nodes once flattened.
    levels = [
        {
            "id": f"L{depth}",
            "inputs": [],
            "outputs": [],
            "links": [],
            "nodes": [{"id": i, "type": f"L{depth + 1}"} for i in range(10)],
        }
        for depth in range(5)
    ]
    levels.append(
        {
            "id": "L5",
            "inputs": [],
            "outputs": [],
            "links": [],
            "nodes": [{"id": i, "type": "ImageInvert"} for i in range(10)],
        }
    )
    graph = ui([node(1, "L0")], [], definitions={"subgraphs": levels})
    with pytest.raises(ConversionError, match="more than"):
        convert_ui_to_api(graph, OBJECT_INFO)


def test_object_info_must_be_a_mapping() -> None:
    with pytest.raises(ConversionError, match="object_info"):
        convert_ui_to_api(ui([], []), [])  # type: ignore[arg-type]


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "IMAGE", "*", "x"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "type",
                    "link",
                    "links",
                    "inputs",
                    "outputs",
                    "name",
                    "mode",
                    "widgets_values",
                    "origin_id",
                    "target_id",
                    "widget",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(
    nodes=st.lists(_json, max_size=4),
    links=st.lists(_json, max_size=3),
    subgraphs=_json,
    groups=_json,
)
def test_arbitrary_junk_raises_only_conversion_errors(
    nodes: list[Any], links: list[Any], subgraphs: Any, groups: Any
) -> None:
    workflow = {
        "nodes": nodes,
        "links": links,
        "definitions": {"subgraphs": subgraphs},
        "extra": {"groupNodes": groups},
    }
    try:
        result = convert_ui_to_api(workflow, OBJECT_INFO)
    except ConversionError:
        return
    assert isinstance(result, dict)


def _positions(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) place in a JSON tree, for corrupting one of them."""
    places: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            places.append((value, key))
            places.extend(_positions(child))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            places.append((value, index))
            places.extend(_positions(child))
    return places


def _subgraph_graph() -> dict[str, Any]:
    return with_instance(radius_link=True)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), base=st.sampled_from([txt2img, _subgraph_graph, group_graph]))
def test_corrupting_a_valid_graph_raises_only_conversion_errors(
    data: st.DataObject, base: Any
) -> None:
    graph = base()
    for _ in range(data.draw(st.integers(1, 3))):
        places = _positions(graph)
        container, key = data.draw(st.sampled_from(places))
        container[key] = data.draw(_json)
    try:
        result = convert_ui_to_api(graph, OBJECT_INFO)
    except ConversionError:
        return
    assert isinstance(result, dict)


@pytest.mark.parametrize("external", [True, 1, "a", {"0": [0, 0]}])
def test_a_group_nodes_external_list_that_is_not_a_list_is_refused(external: Any) -> None:
    graph = group_graph()
    (definition,) = graph["extra"]["groupNodes"].values()
    definition["external"] = external
    with pytest.raises(ConversionError, match="external must be a list"):
        convert_ui_to_api(graph, OBJECT_INFO)
