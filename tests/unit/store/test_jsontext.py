"""comfyrun.jsontext: orjson where it can, the standard library where it cannot; what the store
wrote with `json` before reads back the same, and nothing reads back otherwise than it went in."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfyrun import jsontext
from comfyrun.core.job import Job
from comfyrun.store.codec import job_from_row, job_to_row

#: JSON values as `json` reads them: integers of any size, finite floats, any text (lone
#: surrogates included), nested lists and objects
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(values)
def test_what_goes_in_comes_out(value: Any) -> None:
    assert jsontext.loads(jsontext.dumps(value)) == value


@settings(max_examples=300)
@given(values)
def test_text_json_wrote_reads_back_as_json_reads_it(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, separators=(",", ":"), default=str)):
        assert jsontext.loads(text) == json.loads(text)
        assert jsontext.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    "value",
    [
        2**64,  # past what orjson writes or reads as an integer
        -(2**63) - 1,
        18446744073709551615,  # the largest seed ComfyUI takes: orjson's own
        10**40,
        {"seed": 2**70, "list": [-(2**90)]},
    ],
)
def test_integers_of_any_size_are_exact(value: Any) -> None:
    back = jsontext.loads(jsontext.dumps(value))
    assert back == value and type(back) is type(value)


def test_a_long_digit_string_is_text_still() -> None:
    value = {"name": "1234567890123456789012345", "n": 1}
    assert jsontext.loads(jsontext.dumps(value)) == value


def test_lone_surrogates_survive() -> None:
    value = {"text": "a\ud800b"}
    assert jsontext.loads(jsontext.dumps(value)) == value


def test_keys_that_are_not_strings_become_strings_as_with_json() -> None:
    value = {1: "a", None: "b", 2.5: "c", False: "d"}
    assert jsontext.loads(jsontext.dumps(value)) == json.loads(json.dumps(value))


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_what_is_not_json_becomes_its_str_as_before() -> None:
    when = datetime.datetime(2026, 12, 5, 21, 0, 0)
    value = {"when": when, "what": Point(1, 2), "set": {3}}
    assert jsontext.loads(jsontext.dumps(value)) == json.loads(json.dumps(value, default=str))


def test_nan_and_infinity_json_wrote_read_back() -> None:
    back = jsontext.loads('{"a": NaN, "b": Infinity, "c": -Infinity}')
    assert math.isnan(back["a"]) and back["b"] == math.inf and back["c"] == -math.inf


def test_a_nan_is_written_as_null() -> None:
    assert jsontext.loads(jsontext.dumps({"a": math.nan})) == {"a": None}


def test_non_ascii_is_utf_8() -> None:
    assert jsontext.dumps({"t": "é猫"}) == '{"t":"é猫"}'


@pytest.mark.parametrize("text", ["", "{", '{"a":}', "nope", b"\xff\xfe", "[1,]"])
def test_bad_text_raises_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        jsontext.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,  # never closed: refused by orjson (depth), then by json (recursion)
        "[" * 5_000 + "]" * 5_000,  # well formed, too deep
        '{"a":' * 3_000 + "1" + "}" * 3_000,
        "[" * 5_000 + "12345678901234567890123" + "]" * 5_000,  # read by json from the start
    ],
)
def test_text_nested_too_deeply_is_bad_text_not_a_recursion_error(text: str) -> None:
    for form in (text, text.encode()):
        with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
            jsontext.loads(form)
    assert jsontext.loads("[" * 1_000 + "]" * 1_000) is not None  # as deep as orjson reads


def test_a_job_with_a_big_seed_survives_the_store_codec() -> None:
    workflow = {"3": {"class_type": "KSampler", "inputs": {"seed": 2**64 + 7, "cfg": 7.5}}}
    job = Job(id="j", workflow=workflow, metadata={"big": -(2**80)})
    back = job_from_row(job_to_row(job))
    assert back.workflow == workflow and back.metadata == {"big": -(2**80)}


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


@settings(max_examples=300)
@given(values | st.text(alphabet='\\u0\x00a"', max_size=12))
def test_holds_nul_tells_a_nul_character_anywhere(value: Any) -> None:
    """Keys too; and the text "\\u0000" (a backslash, then u0000) is no NUL character."""
    assert jsontext.holds_nul(value) is _has_nul(value)


def test_holds_nul_on_escapes() -> None:
    assert jsontext.holds_nul({"a": "x\x00"}) and jsontext.holds_nul({"\x00": 1})
    assert jsontext.holds_nul(["\\\x00"])  # a backslash, then NUL
    assert not jsontext.holds_nul(["\\u0000", "\\\\u0000", "plain"])
