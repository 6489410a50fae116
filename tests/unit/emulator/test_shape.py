"""The transcript shape comparison used by the conformance tests catches what it must."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.emulator import HISTORY_MAPS, assert_same_shape

RECORDED: dict[str, Any] = {"prompt_id": "abc", "number": 3, "node_errors": {}}


def test_values_ids_and_numbers_are_ignored() -> None:
    assert_same_shape({"prompt_id": "zzz", "number": -1.5, "node_errors": {}}, RECORDED)
    history = {"p1": {"outputs": {"9": {"images": [{"filename": "a"}]}}}}
    assert_same_shape(
        {"p2": {"outputs": {"3": {"images": [{"filename": "b"}, {"filename": "c"}]}}}},
        history,
        maps=HISTORY_MAPS,
    )


@pytest.mark.parametrize(
    "actual",
    [
        {"number": 3, "prompt_id": "abc", "node_errors": {}},
        {"prompt_id": "abc", "number": 3},
        {"prompt_id": "abc", "number": "3", "node_errors": {}},
        {"prompt_id": "abc", "number": True, "node_errors": {}},
        {"prompt_id": None, "number": 3, "node_errors": {}},
        {"prompt_id": "abc", "number": 3, "node_errors": []},
        {"prompt_id": "abc", "number": 3, "node_errors": {}, "extra": 1},
    ],
)
def test_keys_order_and_types_are_not(actual: Any) -> None:
    with pytest.raises(AssertionError):
        assert_same_shape(actual, RECORDED)


def test_nested_differences_inside_id_maps_are_caught() -> None:
    history = {"p1": {"outputs": {"9": {"images": [{"filename": "a", "type": "output"}]}}}}
    with pytest.raises(AssertionError):
        assert_same_shape(
            {"p1": {"outputs": {"9": {"images": [{"filename": "a"}]}}}}, history, maps=HISTORY_MAPS
        )
