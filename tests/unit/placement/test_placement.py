"""Placement rules: which backend takes the next job, and when a backend is full."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from comfyrun.core.placement import (
    BackendState,
    BackendView,
    any_can_serve,
    choose_backend,
    displayed_state,
    has_room,
)

READY, BUSY = BackendState.READY, BackendState.BUSY


def test_a_backend_takes_one_running_and_one_waiting_job() -> None:
    assert has_room(BackendView("a", READY, inflight=0))
    assert has_room(BackendView("a", BUSY, inflight=1))
    assert not has_room(BackendView("a", BUSY, inflight=2))


def test_unhealthy_draining_and_failed_backends_take_nothing() -> None:
    for state in (
        BackendState.UNHEALTHY,
        BackendState.DRAINING,
        BackendState.STARTING,
        BackendState.CRASHED,
        BackendState.RESTARTING,
        BackendState.ERROR,
    ):
        assert not has_room(BackendView("a", state)), state
        assert choose_backend([BackendView("a", state)]) is None


def test_a_stopped_managed_backend_takes_a_job_only_when_it_starts_lazily() -> None:
    assert has_room(BackendView("a", BackendState.STOPPED, lazy_start=True))
    assert not has_room(BackendView("a", BackendState.STOPPED, lazy_start=False))


def test_the_least_loaded_backend_wins() -> None:
    views = [BackendView("a", BUSY, inflight=1), BackendView("b", READY, inflight=0)]
    assert choose_backend(views) == "b"


def test_a_ready_backend_is_preferred_over_starting_a_stopped_one() -> None:
    views = [
        BackendView("lazy", BackendState.STOPPED, lazy_start=True),
        BackendView("up", READY, inflight=0, last_assigned=99),
    ]
    assert choose_backend(views) == "up"


def test_equal_backends_take_turns() -> None:
    views = [BackendView("a", READY, last_assigned=5), BackendView("b", READY, last_assigned=2)]
    assert choose_backend(views) == "b"


def test_avoid_sends_a_job_elsewhere_only_when_elsewhere_has_room() -> None:
    views = [BackendView("a", READY), BackendView("b", BUSY, inflight=1)]
    assert choose_backend(views, avoid="a") == "b"
    assert choose_backend([BackendView("a", READY)], avoid="a") == "a"


def test_displayed_state_shows_busy_while_holding_jobs() -> None:
    assert displayed_state(READY, 1) is BUSY
    assert displayed_state(READY, 0) is READY
    assert displayed_state(BackendState.UNHEALTHY, 1) is BackendState.UNHEALTHY


def test_any_can_serve_is_false_only_when_every_backend_is_in_error() -> None:
    assert not any_can_serve([BackendState.ERROR])
    assert not any_can_serve([BackendState.ERROR, BackendState.ERROR])
    assert any_can_serve([BackendState.ERROR, BackendState.STOPPED])


views_strategy = st.lists(
    st.builds(
        BackendView,
        name=st.text(min_size=1, max_size=3),
        state=st.sampled_from(list(BackendState)),
        inflight=st.integers(0, 3),
        lazy_start=st.booleans(),
        last_assigned=st.integers(0, 10),
    ),
    max_size=6,
)


@given(views_strategy)
def test_the_chosen_backend_always_has_room_and_is_least_loaded(views: list[BackendView]) -> None:
    chosen = choose_backend(views)
    with_room = [v for v in views if has_room(v)]
    if not with_room:
        assert chosen is None
        return
    assert chosen in {v.name for v in with_room}
    least = min(v.inflight for v in with_room)
    assert any(v.name == chosen and v.inflight == least for v in with_room)
