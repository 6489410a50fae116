from __future__ import annotations

from comfyrun.core.workflow import is_api_prompt, is_ui_workflow


def test_ui_workflow_needs_node_and_link_lists() -> None:
    assert is_ui_workflow({"nodes": [], "links": []})
    assert not is_ui_workflow({"nodes": []})
    assert not is_ui_workflow({"nodes": {}, "links": []})
    assert not is_ui_workflow([{"nodes": [], "links": []}])


def test_api_prompt_is_a_map_of_nodes_with_class_and_inputs() -> None:
    prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}
    assert is_api_prompt(prompt)
    assert not is_api_prompt({})
    assert not is_api_prompt({"3": {"class_type": "KSampler"}})
    assert not is_api_prompt({"3": {"class_type": None, "inputs": {}}})
    assert not is_api_prompt({"nodes": [], "links": []})


def test_the_two_formats_do_not_overlap() -> None:
    ui: dict[str, list[object]] = {"nodes": [], "links": []}
    api = {"1": {"class_type": "X", "inputs": {}}}
    assert is_ui_workflow(ui) and not is_api_prompt(ui)
    assert is_api_prompt(api) and not is_ui_workflow(api)
