"""Parsing the `inputs` of a submit body."""

from __future__ import annotations

from typing import Any

import pytest

from comfyrun.errors import InputRejected
from comfyrun.inputs import InputLimits, InputTarget, parse_input_specs

LIMITS = InputLimits()


def test_each_source_form() -> None:
    specs = parse_input_specs(
        [
            {"name": "a.png", "data": "aGk="},
            {"url": "https://example.com/b.png", "node": "12", "input": "image"},
            {"asset_id": "abc", "node": "3"},
        ],
        LIMITS,
    )
    assert [s.kind for s in specs] == ["data", "url", "asset"]
    assert specs[1].target == InputTarget("12", "image")
    assert specs[2].target == InputTarget("3", "")
    assert [s.index for s in specs] == [0, 1, 2]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([{"name": "a.png"}], "source"),
        ([{"name": "a.png", "data": "aGk=", "url": "https://x/y.png"}], "source"),
        ([{"data": "aGk="}], "target"),
        (
            [{"name": "a.png", "data": "aGk="}, {"name": "a.png", "url": "https://x/a.png"}],
            "duplicate_name",
        ),
        ([{"name": "../a.png", "data": "aGk="}], "path_traversal"),
    ],
)
def test_refused_specs(raw: list[dict[str, Any]], reason: str) -> None:
    with pytest.raises(InputRejected) as caught:
        parse_input_specs(raw, LIMITS)
    assert caught.value.details["reason"] == reason


@pytest.mark.parametrize(
    "raw",
    [
        "not a list",
        [1],
        [{"name": 5, "data": "aGk="}],
        [{"name": "a.png", "data": "aGk=", "extra": 1}],
        [{"name": "a.png", "data": "aGk=", "input": "image"}],
    ],
)
def test_malformed_specs(raw: Any) -> None:
    with pytest.raises(InputRejected):
        parse_input_specs(raw, LIMITS)


def test_too_many_files() -> None:
    raw = [{"name": f"{i}.png", "data": "aGk="} for i in range(4)]
    with pytest.raises(InputRejected) as caught:
        parse_input_specs(raw, InputLimits(max_files=3))
    assert caught.value.details == {"reason": "too_many_files", "count": 4, "limit": 3}


def test_inline_request_size_is_capped() -> None:
    raw = [{"name": f"{i}.png", "data": "A" * 400} for i in range(3)]
    parse_input_specs(raw, InputLimits(max_inline_bytes=1200))
    with pytest.raises(InputRejected) as caught:
        parse_input_specs(raw, InputLimits(max_inline_bytes=1199))
    assert caught.value.details["reason"] == "request_too_large"


def test_bad_allow_list_cidr_is_a_config_error() -> None:
    with pytest.raises(ValueError):
        InputLimits(allow_networks=("10.0.0.0/33",))
