"""Fault specs, as given to --fault and POST /emulator/faults."""

from __future__ import annotations

import pytest

from comfyrun.comfy.emulator.faults import OOM_TYPE, Faults, NodeFault


def test_specs_set_the_matching_fields() -> None:
    faults = Faults()
    for spec in (
        "slow:0.25",
        "fail:KSampler:boom",
        "fail-node:7",
        "oom:VAEDecode",
        "exit:SaveImage:9",
        "drop-ws:ImageInvert",
        "hang",
        "http500:/prompt:2",
        "freeze",
    ):
        faults.apply_spec(spec)
    assert faults.delay_s == 0.25
    assert faults.fail_class_types["KSampler"] == NodeFault("RuntimeError", "boom")
    assert faults.fail_node_ids["7"].message == "injected fault"
    assert faults.fail_class_types["VAEDecode"].exception_type == OOM_TYPE
    assert faults.exit_class_types == {"SaveImage": 9}
    assert faults.drop_ws_class_types == {"ImageInvert"}
    assert faults.hang and faults.http_500 == {"/prompt": 2}
    assert faults.frozen
    assert faults.node_fault("7", "Other") is faults.fail_node_ids["7"]
    assert faults.node_fault("1", "KSampler") is faults.fail_class_types["KSampler"]
    assert faults.node_fault("1", "Other") is None
    faults.clear()
    assert faults.to_json() == Faults().to_json()


def test_http_500_counts_down_and_covers_the_api_prefix() -> None:
    faults = Faults(http_500={"/queue": 2})
    assert faults.take_http_500("/api/queue")
    assert faults.take_http_500("/queue")
    assert not faults.take_http_500("/queue")
    assert not faults.take_http_500("/prompt")


@pytest.mark.parametrize(
    "spec", ["", "nope", "fail", "exit:", "oom:", "http500:prompt", "slow:fast", "drop-ws:"]
)
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        Faults().apply_spec(spec)


def test_json_body() -> None:
    faults = Faults()
    faults.apply_json(
        {
            "specs": ["hang"],
            "delay_s": 0.5,
            "http_500": {"/view": 1},
            "fail_node_ids": {"3": {"exception_type": "torch.OutOfMemoryError", "message": "oom"}},
        }
    )
    assert faults.hang and faults.delay_s == 0.5 and faults.http_500 == {"/view": 1}
    assert faults.fail_node_ids["3"] == NodeFault("torch.OutOfMemoryError", "oom")
    faults.apply_json({"frozen": True})
    assert faults.frozen
    faults.apply_json({"clear": True})
    assert not faults.hang and not faults.frozen
