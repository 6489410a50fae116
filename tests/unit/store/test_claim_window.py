"""A claim window's jobs are decoded when looked at (store.sqlclaims.DecodedOnUse): a choice that
takes the first job it likes (a full staging set's) decodes one row of up to `window`, each with
its workflow, not all of them on every claim."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.unit.dispatch.test_staging_choice import job, staging

from comfyrun.core.job import Job, JobStatus
from comfyrun.store import sqlclaims
from comfyrun.store.codec import job_to_row
from comfyrun.store.sqlclaims import DecodedOnUse


def rows(n: int) -> list[dict[str, Any]]:
    return [
        job_to_row(Job(id=f"j{i}", workflow={"1": {"class_type": "X"}}, status=JobStatus.QUEUED))
        for i in range(n)
    ]


def test_rows_are_decoded_once_each_and_only_when_looked_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[str] = []
    real = sqlclaims.job_from_row

    def counting(row: Any) -> Job:
        decoded.append(row["id"])
        return real(row)

    monkeypatch.setattr(sqlclaims, "job_from_row", counting)
    jobs = DecodedOnUse(rows(32))
    assert len(jobs) == 32 and decoded == []
    assert jobs[1].id == "j1" and jobs[1] is jobs[1] and decoded == ["j1"]
    assert [j.id for j in jobs[2:4]] == ["j2", "j3"] and jobs[-1].id == "j31"
    assert decoded == ["j1", "j2", "j3", "j31"]
    assert [j.id for j in jobs] == [f"j{i}" for i in range(32)]
    assert len(decoded) == 32  # each once, however often looked at
    with pytest.raises(IndexError):
        jobs[32]


class Watched(Sequence[Job]):
    """Jobs that record which of them were looked at."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs, self.seen = jobs, set[int]()

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: Any) -> Any:
        self.seen.add(i)
        return self.jobs[i]

    def __iter__(self) -> Iterator[Job]:
        for i in range(len(self.jobs)):
            yield self[i]


def test_a_full_staging_set_looks_no_further_than_the_first_job_without_downloads(
    tmp_path: Path,
) -> None:
    choice = staging(tmp_path).without_downloads(None, window=32)
    window = Watched([job("fresh.st"), job(None)] + [job("fresh2.st")] * 30)
    assert choice.pick(window) == 1 and window.seen == {0, 1}
