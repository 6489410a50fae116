"""A backend's pipeline depth (core.pipeline): held prompts enough to cover comfyrun's round trip
to the next one, for prompts that run shorter than it; the floor for long ones."""

from __future__ import annotations

import pytest

from comfyrun.core.pipeline import MAX_PIPELINE, SMOOTHING, Pace, Smoothed, pipeline_depth


def test_unknown_times_give_the_floor() -> None:
    assert pipeline_depth(None, 0.02, floor=2) == 2
    assert pipeline_depth(0.004, None, floor=2) == 2
    assert Pace.new().depth(2) == 2


def test_prompts_longer_than_the_refill_keep_one_waiting() -> None:
    assert pipeline_depth(5.0, 0.02, floor=2) == 2  # a real model's prompt: seconds
    assert pipeline_depth(0.02, 0.02, floor=2) == 2  # as long as the round trip: one covers it


@pytest.mark.parametrize(
    ("run_s", "refill_s", "depth"),
    [(0.015, 0.02, 3), (0.008, 0.02, 4), (0.004, 0.02, MAX_PIPELINE), (0.0, 0.02, MAX_PIPELINE)],
)
def test_short_prompts_get_as_many_waiting_as_the_refill_takes_runs(
    run_s: float, refill_s: float, depth: int
) -> None:
    assert pipeline_depth(run_s, refill_s, floor=2) == depth


def test_a_configured_depth_above_the_cap_is_kept() -> None:
    assert pipeline_depth(0.001, 0.02, floor=6) == 6
    assert pipeline_depth(10.0, 0.02, floor=6) == 6


def test_smoothing_moves_a_fraction_of_the_way_and_ignores_nonsense() -> None:
    s = Smoothed()
    s.note(0.010)
    assert s.value == 0.010
    s.note(0.020)
    assert s.value == pytest.approx(0.010 + SMOOTHING * 0.010)
    s.note(-1.0)
    s.note(float("nan"))
    assert s.value == pytest.approx(0.010 + SMOOTHING * 0.010)


def test_one_slow_prompt_does_not_drop_a_short_backend_to_the_floor() -> None:
    pace = Pace.new()
    for _ in range(10):
        pace.run.note(0.004)
        pace.refill.note(0.02)
    assert pace.depth(2) == MAX_PIPELINE
    pace.run.note(0.050)  # one slow prompt
    assert pace.depth(2) > 2
