"""Backend health rules: when a backend stops taking jobs, when it counts as down, when it is back."""

from __future__ import annotations

from comfyrun.backends.health import Health, after_probe, after_ws, quarantine


def healthy() -> Health:
    return after_ws(after_probe(Health(), ok=True, idle=None, threshold=2), True)


def test_a_new_backend_accepts_after_a_probe_answers_and_its_websocket_is_up() -> None:
    assert not Health().accepting
    assert not after_probe(Health(), ok=True, idle=None, threshold=2).accepting
    assert healthy().accepting


def test_a_dropped_websocket_stops_new_jobs_but_is_not_down() -> None:
    h = after_ws(healthy(), False)
    assert not h.accepting
    assert not h.down


def test_down_only_after_threshold_failed_probes_in_a_row() -> None:
    h = after_probe(healthy(), ok=False, idle=None, threshold=2)
    assert not h.down and h.accepting
    h = after_probe(h, ok=False, idle=None, threshold=2)
    assert h.down and not h.accepting


def test_one_answer_resets_the_failures() -> None:
    h = after_probe(healthy(), ok=False, idle=None, threshold=2)
    h = after_probe(h, ok=True, idle=None, threshold=2)
    h = after_probe(h, ok=False, idle=None, threshold=2)
    assert not h.down


def test_quarantine_is_down_at_once_and_ends_only_when_comfyui_is_idle() -> None:
    h = quarantine(healthy(), 2)
    assert h.down and not h.accepting
    h = after_probe(h, ok=True, idle=False, threshold=2)
    assert h.quarantined and not h.accepting
    h = after_probe(h, ok=True, idle=True, threshold=2)
    assert h.accepting and not h.down
