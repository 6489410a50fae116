"""Submission-time validation accepts the model names a job brings, and only those."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import memory_settings

from comfyrun.errors import InvalidWorkflow
from comfyrun.models import ModelRef
from comfyrun.models.names import accept_model_names
from comfyrun.service import JobService, Submission
from comfyrun.store.memory import MemoryStore

OBJECT_INFO: dict[str, Any] = {
    "CheckpointLoaderSimple": {
        "input": {"required": {"ckpt_name": [["installed.safetensors"], {}]}},
        "input_order": {"required": ["ckpt_name"]},
        "output": ["MODEL", "CLIP", "VAE"],
        "output_is_list": [False, False, False],
        "output_name": ["MODEL", "CLIP", "VAE"],
        "name": "CheckpointLoaderSimple",
        "output_node": False,
    },
    "LoraLoaderModelOnly": {
        "input": {
            "required": {
                "model": ["MODEL", {}],
                "lora_name": ["COMBO", {"options": []}],
            }
        },
        "input_order": {"required": ["model", "lora_name"]},
        "output": ["MODEL"],
        "output_is_list": [False],
        "output_name": ["MODEL"],
        "name": "LoraLoaderModelOnly",
        "output_node": True,
    },
}
BROUGHT = (
    ModelRef(folder="checkpoints", name="brought.safetensors", url="https://h/c"),
    ModelRef(folder="loras", name="styles/l.safetensors", url="https://h/l"),
)


def workflow(ckpt: str, lora: str = "styles/l.safetensors") -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": ["1", 0], "lora_name": lora},
        },
    }


def test_only_the_inputs_set_to_a_brought_name_offer_it() -> None:
    original = copy.deepcopy(OBJECT_INFO)
    out = accept_model_names(OBJECT_INFO, workflow("brought.safetensors"), BROUGHT)
    assert out["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "installed.safetensors",
        "brought.safetensors",
    ]
    lora = out["LoraLoaderModelOnly"]["input"]["required"]["lora_name"]
    assert lora[1]["options"] == ["styles/l.safetensors"]
    assert original == OBJECT_INFO  # not modified in place
    untouched = accept_model_names(OBJECT_INFO, workflow("installed.safetensors", "x"), BROUGHT)
    assert untouched["CheckpointLoaderSimple"] is OBJECT_INFO["CheckpointLoaderSimple"]


@pytest.fixture
async def service(tmp_path: Path) -> JobService:
    store = MemoryStore()
    await store.open()

    async def object_info() -> dict[str, Any]:
        return OBJECT_INFO

    return JobService(store, memory_settings(tmp_path), object_info=object_info)


async def test_a_job_may_name_the_models_it_brings(service: JobService) -> None:
    models = [m.to_json() for m in BROUGHT]
    submitted = await service.submit(
        Submission(workflow=workflow("brought.safetensors"), options={"models": models})
    )
    assert submitted.job.options["models"] == models
    with pytest.raises(InvalidWorkflow) as err:  # not brought, not installed: ComfyUI's error
        await service.submit(Submission(workflow=workflow("other.safetensors")))
    assert err.value.details["node_errors"]["1"]["errors"][0]["type"] == "value_not_in_list"
