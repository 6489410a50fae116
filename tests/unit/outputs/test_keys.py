"""Storage keys and output naming."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfyrun.errors import InvalidRequest
from comfyrun.outputs.keys import (
    job_prefix,
    job_segment,
    output_key,
    safe_segment,
    validate_key,
    validate_prefix,
)


@pytest.mark.parametrize("key", ["a", "job/9/x.png", "assets/blobs/abc", "j/9/fotó (1).png"])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "/a", "a/", "a//b", "./a", "a/..", "..", "a\\b", "a\nb", "x/.comfyrun-tmp/y", "a" * 1025],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_key(key)


def test_prefixes_end_with_a_slash() -> None:
    assert validate_prefix("job/") == "job/"
    for bad in ("job", "/", "", "../"):
        with pytest.raises(InvalidRequest):
            validate_prefix(bad)


def test_output_key_layout() -> None:
    assert output_key("j1", "9", "ComfyUI_00001_.png") == "j1/9/ComfyUI_00001_.png"
    assert job_prefix("j1") == "j1/"


def test_a_job_never_lands_in_the_assets_namespace() -> None:
    assert output_key("assets", "9", "a.png").startswith("_assets~")
    assert job_prefix("Assets").startswith("_Assets~")
    for namespace in ("assets", "comfy-inputs", "comfy-inputs-of", "COMFY-INPUTS-OF"):
        assert job_segment(namespace) != namespace


def test_no_two_jobs_share_a_folder() -> None:
    """A folder is its job's id only when that id is a safe segment of no namespace; any
    other id (that a client chose) gets one of its own, which no other id's folder is."""
    assert job_segment("01a2-uuid") == "01a2-uuid"
    ids = ["a:b", "a_b", "assets", "_assets", "Assets", "a/b", "a\\b", ".x", "x"]
    folders = [job_segment(i) for i in ids]
    assert len(set(folders)) == len(ids)
    escaped = job_segment("assets")
    assert job_segment(escaped) != escaped  # an id spelled as another's folder is escaped too
    for job_id in ids:
        assert validate_key(job_segment(job_id)) == job_segment(job_id)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "file"),
        (".hidden.png", "hidden.png"),
        ("a/b\\c.png", "a_b_c.png"),
        ('we"ird<>.png', "we_ird__.png"),
        ("", "file"),
    ],
)
def test_safe_segment(name: str, expected: str) -> None:
    assert safe_segment(name) == expected


def test_safe_segment_keeps_the_extension_when_shortening() -> None:
    name = "x" * 300 + ".webm"
    out = safe_segment(name)
    assert len(out) == 200 and out.endswith(".webm")


@given(st.text(max_size=300), st.text(max_size=20), st.text(max_size=300))
def test_output_key_is_always_a_valid_three_part_key(job: str, node: str, name: str) -> None:
    key = output_key(job or "j", node, name)
    assert validate_key(key) == key
    assert len(key.split("/")) == 3
