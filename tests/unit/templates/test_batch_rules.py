"""The pure batch rules: matrix expansion, when a batch ends, progress and fair tags."""

from __future__ import annotations

import pytest

from comfyrun.core.batch import (
    NO_GROUP,
    BatchStatus,
    ending,
    expand_matrix,
    fair_key,
    fair_tag,
    progress,
)
from comfyrun.core.job import JobStatus
from comfyrun.errors import InvalidParams
from comfyrun.templates.batches import item_values


def test_a_matrix_expands_to_its_cartesian_product_last_key_fastest() -> None:
    assert expand_matrix({"seed": [1, 2], "prompt": ["a", "b"]}) == [
        {"seed": 1, "prompt": "a"},
        {"seed": 1, "prompt": "b"},
        {"seed": 2, "prompt": "a"},
        {"seed": 2, "prompt": "b"},
    ]


def test_item_values_need_exactly_one_shape() -> None:
    assert item_values([{"params": {"a": 1}}, {}], None) == [{"a": 1}, {}]
    for items, matrix in (([], {"a": [1]}), (None, None), ([], None), (None, {"a": []})):
        with pytest.raises(InvalidParams):
            item_values(items, matrix)


def test_a_batch_ends_when_no_job_is_open_and_only_once() -> None:
    assert ending(BatchStatus.RUNNING, 1) is None
    assert ending(BatchStatus.RUNNING, 0) is BatchStatus.COMPLETED
    assert ending(BatchStatus.CANCELING, 0) is BatchStatus.CANCELED
    assert ending(BatchStatus.COMPLETED, 0) is None


def test_progress_counts_ended_jobs() -> None:
    counts = {JobStatus.SUCCEEDED: 2, JobStatus.FAILED: 1, JobStatus.QUEUED: 1}
    assert progress(4, counts) == 0.75 and progress(0, {}) == 1.0


def test_fair_tags_make_groups_take_turns() -> None:
    assert fair_key("b1", "ann") == "batch:b1" and fair_key(None, "ann") == "owner:ann"
    assert fair_key(None, None) == NO_GROUP
    assert fair_tag(None, None) == 0.0  # an empty queue
    assert fair_tag(7.0, None) == 7.0  # an idle group joins at the head
    assert fair_tag(7.0, 9.0) == 10.0  # a busy group queues behind its own last job
    assert fair_tag(7.0, 3.0) == 7.0  # a group that fell behind does not jump the queue
