"""Late binding: a held prompt (in a backend's ComfyUI queue, not started) never strands its
job while another backend is idle, and never lets a lower priority start before a higher one."""

from __future__ import annotations

from comfyrun.core.placement import (
    BackendState,
    BackendView,
    HeldPrompt,
    RunningPrompt,
    choose_for_job,
    choose_overtaken,
    choose_preemption,
    choose_takeback,
    is_idle,
    may_hold,
)

READY, BUSY = BackendState.READY, BackendState.BUSY


def anywhere(job_id: str, backend: str) -> bool:
    return True


def test_a_held_prompt_moves_to_a_backend_that_fell_idle() -> None:
    views = [BackendView("a", BUSY, inflight=2), BackendView("b", READY, inflight=0)]
    held = [HeldPrompt("j1", "a", priority=0, seq=1)]
    assert choose_takeback(views, held, anywhere) == ("j1", "b")


def test_nothing_moves_while_no_backend_is_idle() -> None:
    views = [BackendView("a", BUSY, inflight=2), BackendView("b", BUSY, inflight=1)]
    assert choose_takeback(views, [HeldPrompt("j1", "a", 0, 1)], anywhere) is None


def test_an_unhealthy_backend_with_nothing_to_do_is_not_idle() -> None:
    assert not is_idle(BackendView("b", BackendState.UNHEALTHY, inflight=0))
    views = [BackendView("a", BUSY, inflight=2), BackendView("b", BackendState.DRAINING)]
    assert choose_takeback(views, [HeldPrompt("j1", "a", 0, 1)], anywhere) is None


def test_the_highest_priority_then_the_first_claimed_held_prompt_moves_first() -> None:
    views = [
        BackendView("a", BUSY, inflight=2),
        BackendView("b", BUSY, inflight=2),
        BackendView("c", READY, inflight=0),
    ]
    held = [HeldPrompt("low", "a", 0, 1), HeldPrompt("high", "b", 5, 3), HeldPrompt("x", "a", 5, 4)]
    assert choose_takeback(views, held, anywhere) == ("high", "c")


def test_a_held_prompt_moves_only_to_an_idle_backend_that_can_run_it() -> None:
    views = [
        BackendView("a", BUSY, inflight=2),
        BackendView("b", READY, inflight=0),
        BackendView("c", READY, inflight=0),
    ]
    held = [HeldPrompt("sdxl", "a", 0, 1)]
    assert choose_takeback(views, held, lambda job, backend: backend == "c") == ("sdxl", "c")
    assert choose_takeback(views, held, lambda job, backend: backend == "a") is None


def test_a_job_holds_behind_another_only_when_no_held_prompt_outranks_it() -> None:
    held = [HeldPrompt("h", "a", priority=5, seq=1)]
    assert may_hold(5, held)
    assert may_hold(9, held)
    assert not may_hold(0, held)
    assert may_hold(-3, [])


def test_a_waiting_job_of_higher_priority_takes_back_the_lowest_newest_held_prompt() -> None:
    held = [HeldPrompt("a1", "a", 0, 1), HeldPrompt("b1", "b", 0, 2), HeldPrompt("c1", "c", 3, 3)]
    assert choose_preemption(held, 10) == "b1"
    assert choose_preemption(held, 2) == "b1"
    assert choose_preemption(held, 0) is None  # equal priority: first come, first served
    assert choose_preemption(held, None) is None
    assert choose_preemption([], 10) is None


def test_a_job_goes_to_the_least_loaded_backend_it_fits() -> None:
    views = [
        BackendView("a", READY, inflight=0),
        BackendView("b", BUSY, inflight=1),
        BackendView("c", BUSY, inflight=2),
    ]
    assert choose_for_job(views, lambda name: True) == "a"
    assert choose_for_job(views, lambda name: name != "a") == "b"
    assert choose_for_job(views, lambda name: name == "c") is None  # full: it waits


def test_a_retry_goes_elsewhere_at_equal_load_but_waits_behind_no_one_for_it() -> None:
    """`failed_on` ranks the backend the last attempt failed on after the others of its load
    (its turn in the rotation and its models held count for less); a less loaded one is still
    taken rather than queue the retry behind other work."""
    idle = [
        BackendView("a", READY, inflight=0, last_assigned=1),
        BackendView("b", READY, inflight=0, last_assigned=2),
    ]
    assert choose_for_job(idle, lambda name: True) == "a"  # its turn
    assert choose_for_job(idle, lambda name: True, failed_on="a") == "b"
    assert choose_for_job(idle, lambda name: True, failed_on="b") == "a"
    models_on_a = {"a": 2, "b": 0}
    assert choose_for_job(idle, lambda n: True, affinity=models_on_a.get, failed_on="a") == "b"
    busy_b = [idle[0], BackendView("b", BUSY, inflight=1, last_assigned=2)]
    assert choose_for_job(busy_b, lambda name: True, failed_on="a") == "a"
    assert choose_for_job(idle, lambda name: name == "a", failed_on="a") == "a"  # only a fits


def test_an_overtaken_held_prompt_moves_to_the_backend_that_frees_sooner() -> None:
    # a runs a long job (claimed 1) with j3 (claimed 3) held behind it; b already started job 5,
    # claimed after j3, and has room: j3 moves to b, expected to free sooner
    views = [BackendView("a", BUSY, inflight=2), BackendView("b", BUSY, inflight=1)]
    held = [HeldPrompt("j3", "a", 0, 3)]
    running = {"a": RunningPrompt("a", 1, remaining=40.0), "b": RunningPrompt("b", 5, 8.0)}
    assert choose_overtaken(views, held, running, anywhere) == ("j3", "b")


def test_a_held_prompt_stays_when_its_backend_frees_about_as_soon() -> None:
    views = [BackendView("a", BUSY, inflight=2), BackendView("b", BUSY, inflight=1)]
    held = [HeldPrompt("j3", "a", 0, 3)]
    near = {"a": RunningPrompt("a", 1, 10.0), "b": RunningPrompt("b", 5, 8.0)}
    assert choose_overtaken(views, held, near, anywhere) is None
    later = {"a": RunningPrompt("a", 1, 2.0), "b": RunningPrompt("b", 5, 64.0)}
    assert choose_overtaken(views, held, later, anywhere) is None


def test_only_a_prompt_claimed_after_it_overtakes_a_held_one() -> None:
    views = [BackendView("a", BUSY, inflight=2), BackendView("b", BUSY, inflight=1)]
    held = [HeldPrompt("j3", "a", 0, 3)]
    running = {"a": RunningPrompt("a", 1, 40.0), "b": RunningPrompt("b", 2, 1.0)}
    assert choose_overtaken(views, held, running, anywhere) is None


def test_an_overtaken_prompt_moves_only_to_room_it_fits() -> None:
    views = [
        BackendView("a", BUSY, inflight=2),
        BackendView("b", BUSY, inflight=2),  # no room
        BackendView("c", BUSY, inflight=1),
        BackendView("d", BUSY, inflight=1),
    ]
    held = [HeldPrompt("j3", "a", 0, 3)]
    running = {
        "a": RunningPrompt("a", 1, 40.0),
        "b": RunningPrompt("b", 6, 1.0),
        "c": RunningPrompt("c", 7, 2.0),
        "d": RunningPrompt("d", 8, 3.0),
    }
    assert choose_overtaken(views, held, running, anywhere) == ("j3", "c")  # frees first
    not_c = lambda job_id, backend: backend != "c"  # noqa: E731
    assert choose_overtaken(views, held, running, not_c) == ("j3", "d")
