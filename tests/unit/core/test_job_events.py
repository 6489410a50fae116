"""core.job.may_end: which events may have ended their job (what a ?wait and PostgreSQL's
NOTIFY mark go by)."""

from __future__ import annotations

from typing import Any

import pytest

from comfyrun.core.job import TERMINAL, TERMINAL_NAMES, JobStatus, may_end


@pytest.mark.parametrize(
    ("kind", "data", "ends"),
    [
        *[("status", {"status": s.value}, s in TERMINAL) for s in JobStatus],
        ("status", {}, True),  # names no status: the job itself tells
        ("status", {"status": None}, True),
        ("status", {"status": "retrying"}, False),
        ("progress", {"status": "succeeded"}, False),
        ("output", {}, False),
        ("log", {"line": "x"}, False),
    ],
)
def test_only_a_status_event_naming_a_final_status_or_none_may_end_a_job(
    kind: str, data: dict[str, Any], ends: bool
) -> None:
    assert may_end(kind, data) is ends


def test_the_terminal_names_are_the_terminal_statuses() -> None:
    assert {"succeeded", "failed", "canceled", "expired"} == TERMINAL_NAMES
    assert {JobStatus(name) for name in TERMINAL_NAMES} == TERMINAL
