"""Job, batch and prompt ids are UUIDv7: canonical UUIDs that sort by the millisecond they
were made in (the store's indexes of them grow at one end); an id a client chooses (ComfyUI's
prompt_id) is one any URL path can name."""

from __future__ import annotations

import time
import uuid

import pytest

from comfyrun.core.batch import NewBatch
from comfyrun.core.ids import chosen_id_problem, uuid7
from comfyrun.core.job import NewJob, new_prompt_id


def millis(value: str) -> int:
    return uuid.UUID(value).int >> 80


def test_a_version_7_uuid_in_canonical_form() -> None:
    value = uuid7()
    parsed = uuid.UUID(value)
    assert str(parsed) == value
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_it_carries_the_millisecond_it_was_made_in() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= millis(value) <= after
    assert millis(uuid7(unix_ms=1_234_567)) == 1_234_567


def test_ids_of_later_milliseconds_sort_after() -> None:
    ids = [uuid7(unix_ms=ms) for ms in range(1_700_000_000_000, 1_700_000_000_050)]
    assert ids == sorted(ids)


def test_ids_of_one_millisecond_differ() -> None:
    ids = {uuid7(unix_ms=5) for _ in range(10_000)}
    assert len(ids) == 10_000


def test_new_jobs_batches_and_prompts_get_them() -> None:
    for value in (NewJob(workflow={}).id, NewBatch(workflow="w", version="1").id, new_prompt_id()):
        assert uuid.UUID(value).version == 7
    first = NewJob(workflow={}).id
    time.sleep(0.002)
    assert NewJob(workflow={}).id > first


@pytest.mark.parametrize(
    "job_id", ["3f1c8a2e-6b1d-4c8e-9f7a-0b1c2d3e4f50", "名前 ?#%", "a\\b", "x" * 256, "..."]
)
def test_an_id_any_path_can_name_may_be_chosen(job_id: str) -> None:
    assert chosen_id_problem(job_id) is None


@pytest.mark.parametrize(
    ("job_id", "why"),
    [
        ("", "empty"),
        (" \t", "empty"),
        ("x" * 257, "more than 256"),
        ("a/b", "slash"),
        ("..", "slash or be"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
    ],
)
def test_an_id_no_path_can_name_is_refused(job_id: str, why: str) -> None:
    problem = chosen_id_problem(job_id)
    assert problem is not None and why in problem
