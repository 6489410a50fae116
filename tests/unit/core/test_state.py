"""The job state machine, driven exhaustively without I/O: every state by every event."""

from __future__ import annotations

import itertools

import pytest

from comfyrun.core.job import ACTIVE, TERMINAL, JobStatus
from comfyrun.core.state import TRANSITIONS, Event, allowed, next_state
from comfyrun.errors import Conflict, IllegalTransition

Q, R, C = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELING
S, F, X, E = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED

#: The whole table, written out again by hand from the issue's rules: the test is the spec.
EXPECTED: dict[tuple[JobStatus, Event], JobStatus] = {
    (Q, Event.CLAIM): R,
    (Q, Event.CANCEL): X,
    (R, Event.SUCCEED): S,
    (R, Event.FAIL): F,
    (R, Event.RETRY): Q,
    (R, Event.CANCEL): C,
    (R, Event.LEASE_LOST): Q,
    (R, Event.REQUEUE): Q,
    (C, Event.CANCEL): C,
    (C, Event.CANCELED): X,
    (C, Event.SUCCEED): X,
    (C, Event.FAIL): X,
    (C, Event.RETRY): X,
    (C, Event.LEASE_LOST): X,
    (C, Event.REQUEUE): X,
    (S, Event.CANCEL): S,
    (F, Event.CANCEL): F,
    (X, Event.CANCEL): X,
    (E, Event.CANCEL): E,
    (S, Event.EXPIRE): E,
    (F, Event.EXPIRE): E,
    (X, Event.EXPIRE): E,
}

ALL_PAIRS = list(itertools.product(JobStatus, Event))


@pytest.mark.parametrize(("status", "event"), ALL_PAIRS, ids=lambda v: str(v))
def test_every_state_and_event(status: JobStatus, event: Event) -> None:
    expected = EXPECTED.get((status, event))
    assert allowed(status, event) is (expected is not None)
    if expected is None:
        with pytest.raises(IllegalTransition) as info:
            next_state(status, event)
        assert isinstance(info.value, Conflict)
        assert info.value.details == {"status": status.value, "event": event.value}
        assert info.value.code == "illegal_transition"
    else:
        assert next_state(status, event) is expected


def test_table_is_exactly_the_spec() -> None:
    assert dict(TRANSITIONS) == EXPECTED


def test_illegal_event_changes_nothing() -> None:
    before = dict(TRANSITIONS)
    for status, event in ALL_PAIRS:
        if not allowed(status, event):
            with pytest.raises(IllegalTransition):
                next_state(status, event)
    assert dict(TRANSITIONS) == before


def test_terminal_states_only_leave_through_expiry() -> None:
    for status in TERMINAL:
        for event in Event:
            if allowed(status, event):
                assert next_state(status, event) in {status, E}


def test_cancel_is_legal_everywhere() -> None:
    assert all(allowed(status, Event.CANCEL) for status in JobStatus)


def test_only_claim_enters_running() -> None:
    entering = {(s, e) for (s, e), to in TRANSITIONS.items() if to is R and s is not R}
    assert entering == {(Q, Event.CLAIM)}


def test_active_jobs_always_have_a_way_out() -> None:
    for status in ACTIVE:
        outcomes = {next_state(status, e) for e in Event if allowed(status, e)}
        assert outcomes & TERMINAL


def test_every_state_is_reachable_from_queued() -> None:
    seen, frontier = {Q}, [Q]
    while frontier:
        status = frontier.pop()
        for event in Event:
            if allowed(status, event):
                to = next_state(status, event)
                if to not in seen:
                    seen.add(to)
                    frontier.append(to)
    assert seen == set(JobStatus)
