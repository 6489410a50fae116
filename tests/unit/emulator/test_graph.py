"""Execution order and cache keys, on the graphs of the transcripts."""

from __future__ import annotations

from typing import Any

from comfyrun.comfy.emulator.graph import ExecutionOrder, needed_nodes, signatures
from comfyrun.comfy.emulator.objectinfo import load_base

DEFS = load_base()


def _order(
    prompt: dict[str, Any], outputs: list[str], cached: frozenset[str] = frozenset()
) -> list[str]:
    order = ExecutionOrder(
        prompt,
        lambda n: bool(DEFS[prompt[n]["class_type"]].get("output_node")),
        lambda n: n in cached,
    )
    for output in outputs:
        order.add_node(output)
    ran = []
    while not order.is_empty():
        node_id = order.next()
        ran.append(node_id)
        order.complete(node_id)
    return ran


IMAGE_GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 1},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "p"}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}

T2I: dict[str, Any] = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "cat"}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {
        "class_type": "KSampler",
        "inputs": {
            "model": ["1", 0],
            "positive": ["2", 0],
            "negative": ["3", 0],
            "latent_image": ["4", 0],
            "seed": 1,
        },
    },
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "k"}},
}

ERROR_GRAPH: dict[str, Any] = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "broken"}},
    "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "never"}},
    "5": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 5},
    },
    "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
}


def test_order_matches_the_recorded_runs() -> None:
    assert _order(IMAGE_GRAPH, ["3", "4"]) == ["1", "4", "2", "3"]
    assert _order(T2I, ["7"]) == ["1", "4", "3", "2", "5", "6", "7"]
    assert _order(ERROR_GRAPH, ["6", "4"])[:3] == ["5", "6", "1"]


def test_cached_inputs_are_not_scheduled() -> None:
    assert _order(IMAGE_GRAPH, ["3", "4"], frozenset({"1", "2", "4"})) == ["3", "4"]
    assert _order(T2I, ["7"], frozenset({"1", "2", "3", "4"})) == ["5", "6", "7"]


def test_signatures_change_downstream_of_a_change_only() -> None:
    before = signatures(IMAGE_GRAPH, lambda n: None)
    changed = {
        **IMAGE_GRAPH,
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "q"}},
    }
    after = signatures(changed, lambda n: None)
    assert [n for n in before if before[n] != after[n]] == ["3"]
    recolored = {
        **IMAGE_GRAPH,
        "1": {**IMAGE_GRAPH["1"], "inputs": {**IMAGE_GRAPH["1"]["inputs"], "color": 2}},
    }
    assert all(before[n] != s for n, s in signatures(recolored, lambda n: None).items())
    assert signatures(IMAGE_GRAPH, lambda n: "file-v2" if n == "1" else None)["2"] != before["2"]


def test_needed_nodes() -> None:
    assert sorted(needed_nodes(ERROR_GRAPH, ["6"])) == ["5", "6"]
