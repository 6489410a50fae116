"""Whatever a server sends, the parsers answer a message or ComfyProtocolError, nothing else."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from comfyrun.comfy.errors import ComfyProtocolError
from comfyrun.comfy.history import parse_history, parse_queue
from comfyrun.comfy.messages import parse_binary, parse_event, parse_text
from comfyrun.comfy.outputs import parse_outputs

EVENTS = [
    "status",
    "feature_flags",
    "execution_start",
    "execution_cached",
    "executing",
    "progress",
    "progress_state",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
    "other",
]

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["prompt_id", "node", "nodes", "value", "max", "output", "status", "x"]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(event=st.sampled_from(EVENTS), data=json_values)
def test_parse_event_never_raises_anything_else(event: str, data: Any) -> None:
    with contextlib.suppress(ComfyProtocolError):
        parse_event(event, data)
    frame = json.dumps({"type": event, "data": data})
    with contextlib.suppress(ComfyProtocolError):
        parse_text(frame)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([1, 3, 4, 7]), length=st.integers(0, 64), rest=st.binary(max_size=64))
def test_parse_binary_never_raises_anything_else(kind: int, length: int, rest: bytes) -> None:
    with contextlib.suppress(ComfyProtocolError):
        parse_binary(struct.pack(">II", kind, length) + rest)


@settings(max_examples=100, deadline=None)
@given(body=json_values)
def test_history_queue_and_outputs_never_raise_anything_else(body: Any) -> None:
    for parse in (lambda b: parse_history(b, "prompt_id"), parse_queue):
        with contextlib.suppress(ComfyProtocolError):
            parse(body)
    if isinstance(body, dict):
        parse_outputs(body)
