"""The fleet's union of node catalogs: what ComfyUI clients see of several backends."""

from __future__ import annotations

import copy
from typing import Any

from comfyrun.core.catalog import (
    NodeCatalog,
    definitions_may_be_stale,
    merge_features,
    union_catalog,
    union_models,
    union_names,
    union_object_info,
)


def loader(ckpts: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "input": {"required": {"ckpt_name": [ckpts, {"tooltip": "The checkpoint."}]}, **extra},
        "input_order": {"required": ["ckpt_name"]},
        "output": ["MODEL", "CLIP", "VAE"],
        "name": "CheckpointLoaderSimple",
        "output_node": False,
    }


def new_style_combo(options: list[str]) -> dict[str, Any]:
    return {
        "input": {"required": {"dim": ["COMBO", {"multiselect": False, "options": options}]}},
        "name": "LatentCut",
    }


def test_one_backend_is_shown_as_it_is() -> None:
    info = {"B": loader(["b.safetensors"]), "A": {"input": {}}}
    assert union_object_info([info]) == info
    assert list(union_object_info([info])) == ["B", "A"]


def test_node_types_of_every_backend_are_listed_in_first_seen_order() -> None:
    a = {"KSampler": {"input": {}}, "Common": {"input": {}}}
    b = {"Common": {"input": {}}, "CustomNode": {"input": {"required": {"x": ["INT"]}}}}
    assert list(union_object_info([a, b])) == ["KSampler", "Common", "CustomNode"]


def test_a_combo_on_several_backends_offers_every_choice() -> None:
    a = {"CheckpointLoaderSimple": loader(["a.safetensors", "shared.safetensors"])}
    b = {"CheckpointLoaderSimple": loader(["b.safetensors", "shared.safetensors"])}
    before = copy.deepcopy((a, b))
    spec = union_object_info([a, b])["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    # both lists were sorted, as ComfyUI sorts file lists: so is the union
    assert spec == [
        ["a.safetensors", "b.safetensors", "shared.safetensors"],
        {"tooltip": "The checkpoint."},
    ]
    assert (a, b) == before  # the backends' own definitions are left untouched


def test_new_style_combo_options_are_united_in_first_seen_order() -> None:
    a = {"LatentCut": new_style_combo(["x", "y", "t"])}
    b = {"LatentCut": new_style_combo(["x", "z"])}
    spec = union_object_info([a, b])["LatentCut"]["input"]["required"]["dim"]
    assert spec == ["COMBO", {"multiselect": False, "options": ["x", "y", "t", "z"]}]


def test_an_input_only_a_later_backend_has_is_added_with_its_order() -> None:
    newer = loader(["a.safetensors"], optional={"strength": ["FLOAT", {"default": 1.0}]})
    merged = union_object_info([{"N": loader(["a.safetensors"])}, {"N": newer}])["N"]
    assert merged["input"]["optional"] == {"strength": ["FLOAT", {"default": 1.0}]}
    assert merged["input_order"] == {"required": ["ckpt_name"], "optional": ["strength"]}


def test_non_combo_inputs_keep_the_first_backends_spec() -> None:
    a = {"N": {"input": {"required": {"steps": ["INT", {"max": 100}]}}}}
    b = {"N": {"input": {"required": {"steps": ["INT", {"max": 10000}]}}}}
    assert union_object_info([a, b]) == a


def test_names_are_united_once_each() -> None:
    assert union_names([["b", "a"], ["c", "a"]]) == ["b", "a", "c"]
    assert union_names([["a", "c"], ["b"]]) == ["a", "b", "c"]
    assert union_names([]) == []


def test_model_folders_and_files_are_united() -> None:
    a = {"checkpoints": ["a.ckpt"], "loras": []}
    b = {"checkpoints": ["b.ckpt", "a.ckpt"], "upscale_models": ["x4.pth"]}
    assert union_models([a, b]) == {
        "checkpoints": ["a.ckpt", "b.ckpt"],
        "loras": [],
        "upscale_models": ["x4.pth"],
    }


def test_a_boolean_feature_holds_only_if_every_backend_has_it() -> None:
    merged = merge_features(
        [
            {"supports_preview_metadata": True, "max_upload_size": 10},
            {"supports_preview_metadata": False, "max_upload_size": 20, "extra": True},
        ]
    )
    assert merged == {"supports_preview_metadata": False, "max_upload_size": 10, "extra": True}


def test_the_union_catalog_carries_every_part() -> None:
    one = NodeCatalog(
        backend="a",
        object_info={"A": {"input": {}}},
        fetched_at=10.0,
        comfyui_version="0.3.64",
        models={"checkpoints": ["a.ckpt"]},
        embeddings=["neg"],
        features={"supports_preview_metadata": True},
    )
    two = NodeCatalog(
        backend="b",
        object_info={"B": {"input": {}}},
        fetched_at=5.0,
        models={"checkpoints": ["b.ckpt"], "vae": ["v.pt"]},
        embeddings=["pos", "neg"],
    )
    union = union_catalog([one, two], name="*")
    assert union.backend == "*" and union.comfyui_version == "0.3.64"
    assert list(union.object_info) == ["A", "B"]
    assert union.model_folders == ["checkpoints", "vae"]
    assert union.models["checkpoints"] == ["a.ckpt", "b.ckpt"]
    assert union.embeddings == ["neg", "pos"]
    assert union.fetched_at == 5.0  # as old as its oldest part


def refusal(kind: str, message: str = "", node_error: str | None = None) -> dict[str, Any]:
    node_errors = {}
    if node_error is not None:
        node_errors = {"1": {"errors": [{"type": node_error}], "class_type": "X"}}
    return {"error": {"type": kind, "message": message}, "node_errors": node_errors}


def test_refusals_that_stale_definitions_may_explain() -> None:
    unknown = refusal("invalid_prompt", "Cannot execute because node Foo does not exist.")
    assert definitions_may_be_stale(unknown)
    model = refusal("prompt_outputs_failed_validation", node_error="value_not_in_list")
    assert definitions_may_be_stale(model)
    assert not definitions_may_be_stale(refusal("prompt_no_outputs"))
    assert not definitions_may_be_stale(
        refusal("prompt_outputs_failed_validation", node_error="value_bigger_than_max")
    )
    assert not definitions_may_be_stale(None)
