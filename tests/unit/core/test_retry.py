"""The retry policy: which failures run again, how often, after how long."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfyrun.core.job import Job, JobError
from comfyrun.core.retry import (
    MAX_BACKOFF_S,
    NOT_RETRIED_BY_DEFAULT,
    FailureKind,
    backoff_delay,
    decide,
    failed_on,
)

NOW = 1_700_000_000.0
RETRIED_BY_DEFAULT = sorted(set(FailureKind) - NOT_RETRIED_BY_DEFAULT)


def job(attempts: int = 1, max_retries: int = 3, **kw: object) -> Job:
    return Job(id="j", workflow={}, attempts=attempts, max_retries=max_retries, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "failure", [FailureKind.VALIDATION, FailureKind.NODE_ERROR, FailureKind.INPUT_ERROR]
)
def test_caller_errors_are_not_retried_unless_the_job_opts_in(failure: FailureKind) -> None:
    assert not decide(job(), failure, now=NOW).retry
    opted = job(options={"retry_on_error": True})
    assert decide(opted, failure, now=NOW).retry


@pytest.mark.parametrize(
    "failure",
    [FailureKind.BACKEND_LOST, FailureKind.CRASH, FailureKind.TIMEOUT, FailureKind.LEASE_LOST],
)
def test_infrastructure_failures_retry_up_to_max_retries(failure: FailureKind) -> None:
    # attempts counts runs; max_retries=2 allows 3 runs in all
    outcomes = [decide(job(attempts=n, max_retries=2), failure, now=NOW).retry for n in (1, 2, 3)]
    assert outcomes == [True, True, False]
    assert not decide(job(attempts=1, max_retries=0), failure, now=NOW).retry


def test_out_of_memory_retries_after_freeing_memory() -> None:
    d = decide(job(), FailureKind.OUT_OF_MEMORY, now=NOW)
    assert d.retry and d.free_memory_first
    for failure in RETRIED_BY_DEFAULT:
        if failure is not FailureKind.OUT_OF_MEMORY:
            assert not decide(job(), failure, now=NOW).free_memory_first


def test_no_retry_has_no_delay() -> None:
    d = decide(job(attempts=4, max_retries=3), FailureKind.CRASH, now=NOW)
    assert (d.retry, d.next_run_at, d.free_memory_first) == (False, 0.0, False)


@given(
    base=st.floats(min_value=0.01, max_value=60),
    attempt=st.integers(min_value=1, max_value=40),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_backoff_is_jittered_within_half_to_full_and_capped(
    base: float, attempt: int, seed: int
) -> None:
    full = min(MAX_BACKOFF_S, base * 2 ** (attempt - 1))
    delay = backoff_delay(base, attempt, random.Random(seed))
    assert full / 2 <= delay <= full
    assert delay <= MAX_BACKOFF_S


@given(base=st.floats(min_value=0.01, max_value=10), attempt=st.integers(min_value=1, max_value=8))
def test_backoff_grows_exponentially(base: float, attempt: int) -> None:
    lo_next = backoff_delay(base, attempt + 1, _Fixed(0.0))
    hi_this = backoff_delay(base, attempt, _Fixed(1.0))
    if base * 2**attempt <= MAX_BACKOFF_S:
        # the next attempt's shortest wait is the current attempt's longest
        assert lo_next == pytest.approx(hi_this)


@given(
    attempts=st.integers(min_value=1, max_value=10),
    max_retries=st.integers(min_value=0, max_value=10),
    failure=st.sampled_from(list(FailureKind)),
    opted_in=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_decision_properties(
    attempts: int, max_retries: int, failure: FailureKind, opted_in: bool, seed: int
) -> None:
    j = job(attempts=attempts, max_retries=max_retries, options={"retry_on_error": opted_in})
    d = decide(j, failure, now=NOW, rng=random.Random(seed))
    allowed_kind = opted_in or failure not in NOT_RETRIED_BY_DEFAULT
    assert d.retry == (allowed_kind and attempts - 1 < max_retries)
    if d.retry:
        assert NOW < d.next_run_at <= NOW + MAX_BACKOFF_S
        assert d.free_memory_first == (failure is FailureKind.OUT_OF_MEMORY)


def test_jitter_spreads_retries() -> None:
    rng = random.Random(7)
    delays = {round(backoff_delay(4.0, 3, rng), 6) for _ in range(50)}
    assert len(delays) > 40
    assert all(8.0 <= d <= 16.0 for d in delays)


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_a_retry_names_the_backend_its_last_attempt_failed_on() -> None:
    first = Job(id="j", workflow={}, attempts=1, backend=None)
    assert failed_on(first) is None
    requeued = Job(id="j", workflow={}, attempts=1, backend="a")  # its worker died: no error
    assert failed_on(requeued) is None
    failed = Job(id="j", workflow={}, attempts=1, backend="a", error=JobError("timeout", "late"))
    assert failed_on(failed) == "a"
