"""Dynamic prompts ({a|b} choices and comments) and legacy widget-value layouts."""

from __future__ import annotations

import random

from tests.support.workflow import OBJECT_INFO, node, ui

from comfyrun.core.workflow import convert_ui_to_api
from comfyrun.core.workflow.prompts import process_dynamic_prompt
from comfyrun.core.workflow.widgets import migrate_values


def test_comments_are_stripped_and_plain_text_is_kept() -> None:
    rng = random.Random(0)
    text = "a cat // not this\non a mat /* or\nthis */!"
    assert process_dynamic_prompt(text, rng) == "a cat \non a mat !"
    assert process_dynamic_prompt("no groups here", rng) == "no groups here"


def test_choices_are_resolved_with_the_given_random_source() -> None:
    seen = {
        process_dynamic_prompt("{red|green|blue} car", random.Random(seed)) for seed in range(40)
    }
    assert seen == {"red car", "green car", "blue car"}


def test_nested_groups_and_escapes() -> None:
    results = {process_dynamic_prompt("{a|{b|c}}", random.Random(seed)) for seed in range(60)}
    assert results == {"a", "b", "c"}
    assert process_dynamic_prompt(r"literal \{x\|y\}", random.Random(1)) == "literal {x|y}"


def test_dynamic_text_widgets_are_processed_on_conversion() -> None:
    graph = ui([node(1, "CLIPTextEncode", widgets_values=["{sunny|rainy} day // note"])], [])
    texts = {
        convert_ui_to_api(graph, OBJECT_INFO, rng=random.Random(seed))["1"]["inputs"]["text"]
        for seed in range(30)
    }
    assert texts == {"sunny day ", "rainy day "}


def test_the_upload_slot_follows_all_required_widgets() -> None:
    graph = ui([node(1, "LoadImageMask", widgets_values=["m.png", "red", "image"])], [])
    assert convert_ui_to_api(graph, OBJECT_INFO)["1"]["inputs"] == {
        "image": "m.png",
        "channel": "red",
    }


def test_file_upload_takes_no_slot() -> None:
    graph = ui([node(1, "Load3D", widgets_values=["m.glb", "", 512])], [])
    assert convert_ui_to_api(graph, OBJECT_INFO)["1"]["inputs"] == {
        "model_file": "m.glb",
        "image": "",
        "width": 512,
    }


def test_old_saves_with_a_slot_for_forced_inputs_are_migrated() -> None:
    spec = OBJECT_INFO["Options"]
    assert migrate_values(spec, [True, 2, "second", "l", 99, "p"]) == [True, 2, "second", "l", "p"]
    assert migrate_values(spec, [True, 2, "second", "l", "p"]) == [True, 2, "second", "l", "p"]
    graph = ui([node(1, "Options", widgets_values=[True, 2, "second", "l", 99, "p"])], [])
    assert convert_ui_to_api(graph, OBJECT_INFO)["1"]["inputs"]["points"] == "p"
