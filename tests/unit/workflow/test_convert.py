"""Plain graphs: node emission, links, widget values, defaults and titles."""

from __future__ import annotations

import pytest
from tests.support.workflow import OBJECT_INFO, inp, node, out, txt2img, ui

from comfyrun.core.workflow import convert_ui_to_api


def test_text_to_image_converts_to_the_prompt_the_frontend_sends() -> None:
    prompt = convert_ui_to_api(txt2img(), OBJECT_INFO)
    assert prompt == {
        "4": {
            "inputs": {"ckpt_name": "b.safetensors"},
            "class_type": "CheckpointLoaderSimple",
            "_meta": {"title": "Load Checkpoint"},
        },
        "6": {
            "inputs": {"text": "a cat", "clip": ["4", 1]},
            "class_type": "CLIPTextEncode",
            "_meta": {"title": "Positive"},
        },
        "7": {
            "inputs": {"text": "blurry", "clip": ["4", 1]},
            "class_type": "CLIPTextEncode",
            "_meta": {"title": "CLIP Text Encode (Prompt)"},
        },
        "5": {
            "inputs": {"width": 768, "height": 512, "batch_size": 2},
            "class_type": "EmptyLatentImage",
            "_meta": {"title": "Empty Latent Image"},
        },
        "3": {
            "inputs": {
                "seed": 42,
                "steps": 12,
                "cfg": 6.5,
                "sampler_name": "dpmpp_2m",
                "scheduler": "simple",
                "denoise": 0.9,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
            "class_type": "KSampler",
            "_meta": {"title": "KSampler"},
        },
        "8": {
            "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
            "class_type": "VAEDecode",
            "_meta": {"title": "VAE Decode"},
        },
        "9": {
            "inputs": {"filename_prefix": "out", "images": ["8", 0]},
            "class_type": "SaveImage",
            "_meta": {"title": "Save Image"},
        },
    }


def test_the_stored_seed_is_sent_and_the_control_is_not_applied() -> None:
    for control in ("fixed", "increment", "decrement", "randomize"):
        graph = ui(
            [node(1, "KSampler", widgets_values=[10, control, 1, 1.0, "euler", "normal", 1.0])], []
        )
        assert convert_ui_to_api(graph, OBJECT_INFO)["1"]["inputs"]["seed"] == 10


@pytest.mark.parametrize("values", [None, [], [7]])
def test_missing_or_short_widget_values_fall_back_to_defaults(values: list[int] | None) -> None:
    graph = ui([node(1, "EmptyLatentImage", widgets_values=values)], [])
    inputs = convert_ui_to_api(graph, OBJECT_INFO)["1"]["inputs"]
    expected_width = values[0] if values else 512
    assert inputs == {"width": expected_width, "height": 512, "batch_size": 1}


def test_widget_values_as_a_mapping_are_read_by_name() -> None:
    graph = ui([node(1, "EmptyLatentImage", widgets_values={"height": 64, "width": 32})], [])
    assert convert_ui_to_api(graph, OBJECT_INFO)["1"]["inputs"] == {
        "width": 32,
        "height": 64,
        "batch_size": 1,
    }


def test_a_widget_without_any_value_is_left_out() -> None:
    graph = ui([node(1, "LoadAudio")], [])
    assert convert_ui_to_api(graph, OBJECT_INFO)["1"]["inputs"] == {"audioUI": ""}


def test_combo_values_not_in_the_option_list_are_sent_unchanged() -> None:
    graph = ui([node(1, "CheckpointLoaderSimple", widgets_values=["missing.ckpt"])], [])
    assert convert_ui_to_api(graph, OBJECT_INFO)["1"]["inputs"] == {"ckpt_name": "missing.ckpt"}


def test_upload_refresh_and_extension_widgets() -> None:
    graph = ui(
        [
            node(1, "LoadImage", widgets_values=["cat.png", "image"]),
            node(
                2, "LoadImageOutput", widgets_values=["x.png [output]", False, "refresh", "image"]
            ),
            node(3, "LoadAudio", widgets_values=["a.mp3", None, None]),
        ],
        [],
    )
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert prompt["1"]["inputs"] == {"image": "cat.png"}
    assert prompt["2"]["inputs"] == {"image": "x.png [output]", "refresh": "refresh"}
    assert prompt["3"]["inputs"] == {"audio": "a.mp3", "audioUI": ""}


def test_list_valued_widgets_are_boxed_so_they_do_not_read_as_links() -> None:
    graph = ui([node(1, "Options", widgets_values=[True, 2, "second", "l", [1, 2]])], [])
    inputs = convert_ui_to_api(graph, OBJECT_INFO)["1"]["inputs"]
    assert inputs == {
        "flag": True,
        "count": 2,
        "mode": "second",
        "label": "l",
        "points": {"__value__": [1, 2]},
    }


def test_a_linked_widget_input_replaces_the_widget_value() -> None:
    graph = ui(
        [
            node(1, "PrimitiveInt", outputs=[out("INT", "INT", [1])], widgets_values=[64, "fixed"]),
            node(
                2,
                "EmptyLatentImage",
                inputs=[inp("width", "INT", 1, widget=True)],
                widgets_values=[512, 256, 1],
            ),
        ],
        [[1, 1, 0, 2, 0, "INT"]],
    )
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert prompt["1"]["inputs"] == {"value": 64}
    assert prompt["2"]["inputs"] == {"width": ["1", 0], "height": 256, "batch_size": 1}


def test_title_falls_back_to_the_frontend_display_name() -> None:
    graph = ui(
        [node(1, "ImageBlur"), node(2, "ImageInvert"), node(3, "ImageBlur", title="Mine")], []
    )
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert prompt["1"]["_meta"] == {"title": "Image Blur"}
    assert prompt["2"]["_meta"] == {"title": "Invert Image"}
    assert prompt["3"]["_meta"] == {"title": "Mine"}


def test_unconnected_nodes_are_still_emitted_and_notes_never() -> None:
    prompt = convert_ui_to_api(txt2img(), OBJECT_INFO)
    assert "10" not in prompt and "11" not in prompt
    graph = ui([node(1, "ImageInvert")], [])
    assert convert_ui_to_api(graph, OBJECT_INFO) == {
        "1": {"inputs": {}, "class_type": "ImageInvert", "_meta": {"title": "Invert Image"}}
    }
