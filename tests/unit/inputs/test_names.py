"""Input file names: what is refused and where a job's files go."""

from __future__ import annotations

import pytest

from comfyrun.errors import InputRejected
from comfyrun.inputs import placement_name, sanitize_name, split_placement


@pytest.mark.parametrize("name", ["photo.png", "masks/a.png", "fotó final.JPG", "clip.v2.mp4"])
def test_accepted_names_are_kept(name: str) -> None:
    assert sanitize_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.png", "path_traversal"),
        ("a/../../evil.png", "path_traversal"),
        ("./a.png", "path_traversal"),
        ("/etc/passwd", "absolute_path"),
        ("C:/Windows/x.png", "absolute_path"),
        ("..\\evil.png", "absolute_path"),
        ("a\x00.png", "control_chars"),
        ("a\n.png", "control_chars"),
        ("a\u202e.png", "control_chars"),
        ("", "empty_name"),
        ("   ", "empty_name"),
        ("a//b.png", "bad_segment"),
        (".bashrc", "bad_segment"),
        ("x.png [input]", "forbidden_chars"),
        ("a|b.png", "forbidden_chars"),
        ("x" * 256, "long_name"),
    ],
)
def test_refused_names_say_why(name: str, reason: str) -> None:
    with pytest.raises(InputRejected) as caught:
        sanitize_name(name, index=3)
    assert caught.value.details["reason"] == reason
    assert caught.value.details["index"] == 3
    assert caught.value.code == "input_rejected"


def test_placement_is_unique_per_job_and_splits_for_upload() -> None:
    placed = placement_name("job-1", "masks/a.png")
    assert placed == "comfyrun/job-1/masks/a.png"
    assert placement_name("job-2", "masks/a.png") != placed
    assert split_placement(placed) == ("comfyrun/job-1/masks", "a.png")


def test_placement_cleans_odd_job_ids() -> None:
    assert placement_name("../x y", "a.png") == "comfyrun/_x_y/a.png"
