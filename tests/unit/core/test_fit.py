"""Which backends can run a job: node types, combo values (model files) and labels."""

from __future__ import annotations

from typing import Any

import pytest

from comfyrun.core.fit import (
    BackendOffer,
    RequirementError,
    check_requirements,
    first_fit,
    misfit,
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


class Untouchable(dict[str, Any]):
    """Definitions that fail the test when read."""

    def __getitem__(self, key: str) -> Any:
        raise AssertionError("looked at")

    def get(self, key: str, default: Any = None) -> Any:
        raise AssertionError("looked at")

    def __iter__(self) -> Any:
        raise AssertionError("looked at")

    def items(self) -> Any:
        raise AssertionError("looked at")


def test_first_fit_is_the_first_backend_that_fits_with_known_definitions() -> None:
    fleet = [
        BackendOffer("sd15-only", {"gpu": "3090"}, {**OBJECT_INFO}),
        BackendOffer("unknown", {"gpu": "4090", "vram_gb": 24}, None),
        BackendOffer("big", {"gpu": "4090", "vram_gb": 24}, OBJECT_INFO),
        BackendOffer("never-looked-at", {"gpu": "4090", "vram_gb": 24}, {}),
    ]
    fits, offer, unfit = first_fit(workflow(), {"vram_gb": {"min": 16}}, fleet)
    assert fits and offer is fleet[2] and unfit == []
    # the backends past the first fit are not looked at
    untouchable = BackendOffer("untouchable", {"vram_gb": 24}, Untouchable(OBJECT_INFO))
    assert first_fit(workflow(), {}, [fleet[0], untouchable])[1] is fleet[0]
    with pytest.raises(AssertionError, match="looked at"):
        first_fit(workflow(), {}, [untouchable, fleet[0]])
    # some fit, but none whose definitions are known
    assert first_fit(workflow(), {"vram_gb": {"min": 16}}, fleet[:2]) == (True, None, [])


def test_first_fit_says_why_each_backend_cannot_when_none_can() -> None:
    fleet = [
        BackendOffer("sd15-only", {"gpu": "3090"}, {**OBJECT_INFO}),
        BackendOffer("big", {"gpu": "4090", "vram_gb": 24}, OBJECT_INFO),
    ]
    fits, offer, unfit = first_fit(workflow("sdxl-turbo.safetensors"), {}, fleet)
    assert not fits and offer is None
    assert [u.backend for u in unfit] == ["sd15-only", "big"]
    assert all(u.missing_values for u in unfit)


def _missing_by_reading(
    workflow: dict[str, Any], object_info: dict[str, Any]
) -> tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]]:
    """missing_in as it read object_info at every call (the oracle for its compiled form)."""
    from comfyrun.core.fit import _combo_options, _input_specs

    nodes: list[str] = []
    values: list[tuple[str, str, str]] = []
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            continue
        info = object_info.get(node["class_type"])
        if not isinstance(info, dict):
            if node["class_type"] not in nodes:
                nodes.append(node["class_type"])
            continue
        specs = _input_specs(info)
        for name, value in (node.get("inputs") or {}).items():
            options = _combo_options(specs.get(name))
            if options is not None and isinstance(value, str) and value not in options:
                values.append((str(node_id), str(name), value))
    return tuple(nodes), tuple(values)


def test_the_compiled_catalog_finds_what_reading_object_info_finds(shared_dir: Any) -> None:
    """Every API workflow of the conversion fixtures, as it is and with its values and node
    types changed, against the real frontend's object_info: the same misses either way."""
    import json

    object_info = json.loads((shared_dir / "conversion-fixtures/object_info.json").read_text())
    workflows = [
        json.loads(p.read_text())
        for p in sorted((shared_dir / "conversion-fixtures").glob("*.api.json"))
    ]
    assert len(workflows) > 50
    checked = misses = 0
    for workflow in workflows:
        swapped = {
            k: {
                **n,
                "inputs": {
                    i: "nope.bin" if isinstance(v, str) else v for i, v in n["inputs"].items()
                },
            }
            for k, n in workflow.items()
            if isinstance(n, dict) and isinstance(n.get("inputs"), dict)
        }
        renamed = {
            k: {**n, "class_type": f"{n.get('class_type')}Gone"} if int(k) % 2 else n
            for k, n in workflow.items()
            if k.isdigit() and isinstance(n, dict)
        }
        for variant in (workflow, swapped, renamed):
            found = missing_in(variant, object_info)
            assert found == _missing_by_reading(variant, object_info)
            checked += 1
            misses += len(found[1])
    assert checked == 3 * len(workflows) and misses > 100


def test_a_catalog_read_again_is_compiled_again() -> None:
    """A backend's object_info read again (a new dict: a model added) is what counts."""
    workflow = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "new.ckpt"}}}
    before = missing_in(workflow, OBJECT_INFO)
    assert before == ((), (("1", "ckpt_name", "new.ckpt"),))
    again = json_copy(OBJECT_INFO)
    again["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0].append("new.ckpt")
    assert missing_in(workflow, again) == ((), ())
    assert missing_in(workflow, OBJECT_INFO) == before
    unhashable = {"X": {"input": {"required": {"pick": [[{"a": 1}, "b"], {}]}}}}
    assert missing_in({"1": {"class_type": "X", "inputs": {"pick": "c"}}}, unhashable) == (
        (),
        (("1", "pick", "c"),),
    )


def json_copy(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))
