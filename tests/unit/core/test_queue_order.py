"""core.queue_order: a job's cost from its workflow, and the head start it gets."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from comfyrun.core.queue_order import (
    DEFAULT_STEPS,
    REFERENCE_COST,
    QueueOrder,
    estimate_cost,
    head_start,
)


def txt2img(steps: Any = 20, width: int = 512, height: int = 512, batch: int = 1) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
        "3": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": batch},
        },
        "4": {
            "class_type": "KSampler",
            "inputs": {"model": ["1", 0], "latent_image": ["3", 0], "steps": steps, "seed": 1},
        },
        "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
    }


def test_cost_is_steps_times_pixels_times_batch() -> None:
    assert estimate_cost(txt2img(20)) == 20.0
    assert estimate_cost(txt2img(30, 1024, 1024)) == 120.0
    assert estimate_cost(txt2img(10, batch=4)) == 40.0


def test_the_latent_is_followed_through_other_nodes() -> None:
    wf = txt2img(10, 1024, 512)
    wf["5"] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["3", 0], "scale_by": 2}}
    wf["4"]["inputs"]["latent_image"] = ["5", 0]
    assert estimate_cost(wf) == 20.0  # the size set upstream (1024x512 = 2 units)


def test_every_sampler_counts() -> None:
    wf = txt2img(20)
    wf["7"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {"latent_image": ["4", 0], "steps": 30, "start_at_step": 20, "end_at_step": 25},
    }
    # the second pass samples 5 steps of the first one's latent (512x512, found through it)
    assert estimate_cost(wf) == 20.0 + 5.0


def test_custom_samplers_take_their_steps_from_the_scheduler() -> None:
    wf = {
        "3": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024}},
        "8": {"class_type": "BasicScheduler", "inputs": {"steps": 8, "denoise": 1.0}},
        "9": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {"sigmas": ["8", 0], "latent_image": ["3", 0]},
        },
    }
    assert estimate_cost(wf) == 32.0


def test_unknown_steps_and_sizes_take_defaults() -> None:
    wf = txt2img(steps=["99", 0])  # from a link
    assert estimate_cost(wf) == float(DEFAULT_STEPS)
    img2img = txt2img(10)
    img2img["3"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0]}}
    img2img["2"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
    assert estimate_cost(img2img) == 10.0


def test_a_workflow_without_a_sampler_has_no_estimate() -> None:
    assert estimate_cost({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}) is None
    assert estimate_cost({"nodes": [], "links": []}) is None
    assert estimate_cost([1, 2]) is None


def test_a_cycle_of_links_ends() -> None:
    wf = {
        "1": {"class_type": "KSampler", "inputs": {"steps": 4, "latent_image": ["2", 0]}},
        "2": {"class_type": "LatentBlend", "inputs": {"samples": ["1", 0]}},
    }
    assert estimate_cost(wf) == 4.0


def test_fifo_gives_no_head_start() -> None:
    assert head_start(1e6, QueueOrder.FIFO, 60.0) == 0.0
    assert head_start(1e6, QueueOrder.LONGEST_FIRST, 0.0) == 0.0


def test_an_unknown_cost_counts_as_the_reference() -> None:
    assert head_start(None, QueueOrder.LONGEST_FIRST, 60.0) == 30.0
    assert head_start(REFERENCE_COST, QueueOrder.LONGEST_FIRST, 60.0) == 30.0


@given(
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
    st.floats(min_value=0.001, max_value=1e6, allow_nan=False),
)
def test_head_starts_grow_with_cost_and_stay_within_the_aging_window(
    a: float, b: float, aging: float
) -> None:
    low, high = sorted((a, b))
    ha = head_start(low, QueueOrder.LONGEST_FIRST, aging)
    hb = head_start(high, QueueOrder.LONGEST_FIRST, aging)
    assert 0.0 <= ha <= hb <= aging
