"""Frontend-only nodes and modes: PrimitiveNode, Reroute, mute (2) and bypass (4)."""

from __future__ import annotations

from tests.support.workflow import JSON, OBJECT_INFO, inp, node, out, ui

from comfyrun.core.workflow import convert_ui_to_api


def image_chain(middle_mode: int, *, upstream_mode: int = 0) -> JSON:
    """LoadImage -> ImageInvert -> ImageBlur -> SaveImage, the middle two in `middle_mode`."""
    return ui(
        [
            node(
                1,
                "LoadImage",
                outputs=[out("IMAGE", "IMAGE", [1])],
                widgets_values=["a.png", "image"],
                mode=upstream_mode,
            ),
            node(
                2,
                "ImageInvert",
                inputs=[inp("image", "IMAGE", 1)],
                outputs=[out("IMAGE", "IMAGE", [2])],
                mode=middle_mode,
            ),
            node(
                3,
                "ImageBlur",
                inputs=[inp("image", "IMAGE", 2)],
                outputs=[out("IMAGE", "IMAGE", [3])],
                widgets_values=[2, 0.5],
                mode=middle_mode,
            ),
            node(4, "SaveImage", inputs=[inp("images", "IMAGE", 3)], widgets_values=["b"]),
        ],
        [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"]],
    )


def test_chained_bypassed_nodes_pass_their_matching_input_through() -> None:
    prompt = convert_ui_to_api(image_chain(4), OBJECT_INFO)
    assert set(prompt) == {"1", "4"}
    assert prompt["4"]["inputs"] == {"filename_prefix": "b", "images": ["1", 0]}


def test_muted_nodes_are_dropped_with_every_input_pointing_at_them() -> None:
    prompt = convert_ui_to_api(image_chain(2), OBJECT_INFO)
    assert set(prompt) == {"1", "4"}
    assert prompt["4"]["inputs"] == {"filename_prefix": "b"}


def test_bypass_through_to_a_muted_node_leaves_the_input_out() -> None:
    prompt = convert_ui_to_api(image_chain(4, upstream_mode=2), OBJECT_INFO)
    assert prompt == {
        "4": {
            "inputs": {"filename_prefix": "b"},
            "class_type": "SaveImage",
            "_meta": {"title": "Save Image"},
        }
    }


def test_bypass_with_no_input_of_the_wanted_type_leaves_the_input_out() -> None:
    graph = ui(
        [
            node(1, "EmptyLatentImage", outputs=[out("LATENT", "LATENT", [1])]),
            node(
                2,
                "VAEDecode",
                inputs=[inp("samples", "LATENT", 1), inp("vae", "VAE")],
                outputs=[out("IMAGE", "IMAGE", [2])],
                mode=4,
            ),
            node(3, "SaveImage", inputs=[inp("images", "IMAGE", 2)], widgets_values=["b"]),
        ],
        [[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 3, 0, "IMAGE"]],
    )
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert prompt["3"]["inputs"] == {"filename_prefix": "b"}


def test_bypass_prefers_the_same_slot_then_the_first_input_of_the_type() -> None:
    graph = ui(
        [
            node(1, "LoadImage", outputs=[out("IMAGE", "IMAGE", [1]), out("MASK", "MASK", [])]),
            node(2, "LoadImage", outputs=[out("IMAGE", "IMAGE", [2])]),
            node(3, "LoadImage", outputs=[out("IMAGE", "IMAGE", [4])]),
            # a bypassed node with two IMAGE inputs and two IMAGE outputs
            node(
                5,
                "ImageInvert",
                inputs=[inp("a", "IMAGE", 1), inp("b", "IMAGE", 2)],
                outputs=[out("IMAGE", "IMAGE", [5]), out("IMAGE", "IMAGE", [6])],
                mode=4,
            ),
            node(6, "SaveImage", inputs=[inp("images", "IMAGE", 5)]),
            node(7, "SaveImage", inputs=[inp("images", "IMAGE", 6)]),
        ],
        [
            [1, 1, 0, 5, 0, "IMAGE"],
            [2, 2, 0, 5, 1, "IMAGE"],
            [4, 3, 0, 99, 0, "IMAGE"],
            [5, 5, 0, 6, 0, "IMAGE"],
            [6, 5, 1, 7, 0, "IMAGE"],
        ],
    )
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert prompt["6"]["inputs"]["images"] == ["1", 0]
    assert prompt["7"]["inputs"]["images"] == ["2", 0]


def test_reroute_chains_are_followed_and_dangling_reroutes_vanish() -> None:
    graph = ui(
        [
            node(1, "LoadImage", outputs=[out("IMAGE", "IMAGE", [1])]),
            node(2, "Reroute", inputs=[inp("", "*", 1)], outputs=[out("", "IMAGE", [2])]),
            node(3, "Reroute", inputs=[inp("", "*", 2)], outputs=[out("", "IMAGE", [3])]),
            node(4, "PreviewImage", inputs=[inp("images", "IMAGE", 3)]),
            node(5, "Reroute", inputs=[inp("", "*")], outputs=[out("", "*", [4])]),
            node(6, "PreviewImage", inputs=[inp("images", "IMAGE", 4)]),
        ],
        [
            [1, 1, 0, 2, 0, "IMAGE"],
            [2, 2, 0, 3, 0, "IMAGE"],
            [3, 3, 0, 4, 0, "IMAGE"],
            [4, 5, 0, 6, 0, "*"],
        ],
    )
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert set(prompt) == {"1", "4", "6"}
    assert prompt["4"]["inputs"] == {"images": ["1", 0]}
    assert prompt["6"]["inputs"] == {}


def test_a_primitive_node_is_inlined_into_every_target() -> None:
    graph = ui(
        [
            node(
                1,
                "PrimitiveNode",
                outputs=[out("INT", "INT", [1, 2])],
                widgets_values=[640, "fixed"],
            ),
            node(
                2,
                "EmptyLatentImage",
                inputs=[inp("width", "INT", 1, widget=True)],
                widgets_values=[512, 512, 1],
            ),
            node(
                3,
                "EmptyLatentImage",
                inputs=[inp("height", "INT", 2, widget=True)],
                widgets_values=[512, 100, 1],
            ),
            node(
                4,
                "PrimitiveNode",
                outputs=[out("COMBO", "COMBO", [3])],
                widgets_values=["dpmpp_2m", "fixed", ""],
            ),
            node(
                5,
                "KSampler",
                inputs=[inp("sampler_name", "COMBO", 3, widget=True)],
                widgets_values=[1, "fixed", 20, 8.0, "euler", "normal", 1.0],
            ),
        ],
        [[1, 1, 0, 2, 0, "INT"], [2, 1, 0, 3, 0, "INT"], [3, 4, 0, 5, 0, "COMBO"]],
    )
    prompt = convert_ui_to_api(graph, OBJECT_INFO)
    assert set(prompt) == {"2", "3", "5"}
    assert prompt["2"]["inputs"] == {"width": 640, "height": 512, "batch_size": 1}
    assert prompt["3"]["inputs"] == {"width": 512, "height": 640, "batch_size": 1}
    assert prompt["5"]["inputs"]["sampler_name"] == "dpmpp_2m"


def test_a_primitive_reaches_its_target_through_a_reroute() -> None:
    graph = ui(
        [
            node(
                1,
                "PrimitiveNode",
                outputs=[out("STRING", "STRING", [1])],
                widgets_values=["from primitive"],
            ),
            node(2, "Reroute", inputs=[inp("", "*", 1)], outputs=[out("", "STRING", [2])]),
            node(
                3,
                "CLIPTextEncode",
                inputs=[inp("text", "STRING", 2, widget=True)],
                widgets_values=["stale"],
            ),
        ],
        [[1, 1, 0, 2, 0, "STRING"], [2, 2, 0, 3, 0, "STRING"]],
    )
    assert convert_ui_to_api(graph, OBJECT_INFO)["3"]["inputs"] == {"text": "from primitive"}


def test_a_widget_input_from_a_muted_node_is_dropped_entirely() -> None:
    graph = ui(
        [
            node(1, "PrimitiveInt", outputs=[out("INT", "INT", [1])], mode=2),
            node(
                2,
                "EmptyLatentImage",
                inputs=[inp("width", "INT", 1, widget=True)],
                widgets_values=[300, 200, 1],
            ),
        ],
        [[1, 1, 0, 2, 0, "INT"]],
    )
    assert convert_ui_to_api(graph, OBJECT_INFO)["2"]["inputs"] == {"height": 200, "batch_size": 1}


def test_a_widget_input_through_a_dead_end_bypass_keeps_its_widget_value() -> None:
    graph = ui(
        [
            node(
                1,
                "ImageInvert",
                inputs=[inp("image", "IMAGE")],
                outputs=[out("INT", "INT", [1])],
                mode=4,
            ),
            node(
                2,
                "EmptyLatentImage",
                inputs=[inp("width", "INT", 1, widget=True)],
                widgets_values=[300, 200, 1],
            ),
        ],
        [[1, 1, 0, 2, 0, "INT"]],
    )
    inputs = convert_ui_to_api(graph, OBJECT_INFO)["2"]["inputs"]
    assert inputs == {"width": 300, "height": 200, "batch_size": 1}
