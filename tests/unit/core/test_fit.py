"""Which backends can run a job: node types, combo values (model files) and labels."""

from __future__ import annotations

from typing import Any

import pytest

from comfyrun.core.fit import (
    BackendOffer,
    RequirementError,
    check_requirements,
    misfit,
    misfits,
    missing_in,
    unmet_requirements,
)

OBJECT_INFO: dict[str, Any] = {
    "CheckpointLoaderSimple": {
        "input": {"required": {"ckpt_name": [["sd15.safetensors", "sdxl.safetensors"], {}]}}
    },
    "KSampler": {
        "input": {
            "required": {
                "seed": ["INT", {"default": 0}],
                "sampler_name": ["COMBO", {"options": ["euler", "dpmpp_2m"]}],
                "model": ["MODEL"],
            }
        }
    },
    "LoadImage": {"input": {"required": {"image": [["a.png"], {"image_upload": True}]}}},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"]}}, "output_node": True},
}


def workflow(ckpt: str = "sd15.safetensors", sampler: str = "euler") -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {
            "class_type": "KSampler",
            "inputs": {"seed": 3, "sampler_name": sampler, "model": ["1", 0]},
        },
        "3": {"class_type": "LoadImage", "inputs": {"image": "uploaded-later.png"}},
    }


def test_a_backend_with_every_node_and_model_fits() -> None:
    assert missing_in(workflow(), OBJECT_INFO) == ((), ())
    assert misfit(workflow(), {}, BackendOffer("a", object_info=OBJECT_INFO)) is None


def test_missing_node_types_and_combo_values_are_named() -> None:
    wf = workflow(ckpt="flux.safetensors", sampler="lcm")
    wf["9"] = {"class_type": "CustomUpscale", "inputs": {}}
    nodes, values = missing_in(wf, OBJECT_INFO)
    assert nodes == ("CustomUpscale",)
    assert values == (("1", "ckpt_name", "flux.safetensors"), ("2", "sampler_name", "lcm"))
    why = misfit(wf, {}, BackendOffer("gpu-2", object_info=OBJECT_INFO))
    assert why is not None and "gpu-2" in why.describe() and "flux.safetensors" in why.describe()
    assert why.to_dict()["missing_node_types"] == ["CustomUpscale"]


def test_values_are_not_checked_when_inputs_replace_them() -> None:
    wf = workflow(ckpt="flux.safetensors")
    assert misfit(wf, {}, BackendOffer("a", object_info=OBJECT_INFO), values=False) is None


def test_a_backend_not_described_yet_is_judged_on_its_labels() -> None:
    assert misfit(workflow("x"), {}, BackendOffer("lazy")) is None
    why = misfit(workflow(), {"gpu": "4090"}, BackendOffer("lazy", labels={"gpu": "3090"}))
    assert why is not None and why.unmet == ("gpu",)


def test_requirements_match_labels_by_equality_bounds_and_sets() -> None:
    labels = {"gpu": "4090", "vram_gb": 24, "fp8": True}
    assert unmet_requirements({"gpu": "4090", "vram_gb": {"min": 16}}, labels) == []
    assert unmet_requirements({"vram_gb": {"min": 32}}, labels) == ["vram_gb"]
    assert unmet_requirements({"vram_gb": {"max": 24, "min": 24}}, labels) == []
    assert unmet_requirements({"gpu": {"in": ["a100", "4090"]}}, labels) == []
    assert unmet_requirements({"gpu": {"in": ["a100"]}}, labels) == ["gpu"]
    assert unmet_requirements({"fp8": True, "vram_gb": 24}, labels) == []
    assert unmet_requirements({"region": "eu"}, labels) == ["region"]
    assert unmet_requirements({"gpu": {"min": 1}}, labels) == ["gpu"]  # not a number


def test_malformed_requirements_are_refused() -> None:
    assert check_requirements(None) == {}
    for bad in ([1], {"gpu": ["4090"]}, {"vram": {"least": 3}}, {"vram": {"min": "x"}}, {"a": {}}):
        with pytest.raises(RequirementError):
            check_requirements(bad)


def test_misfits_splits_the_fleet() -> None:
    fleet = [
        BackendOffer("sd15-only", {"gpu": "3090"}, {**OBJECT_INFO}),
        BackendOffer("big", {"gpu": "4090", "vram_gb": 24}, OBJECT_INFO),
    ]
    fit, unfit = misfits(workflow(), {"vram_gb": {"min": 16}}, fleet)
    assert fit == ["big"] and [u.backend for u in unfit] == ["sd15-only"]
