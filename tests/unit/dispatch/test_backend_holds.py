"""An admin's holds (drained, kept stopped) kept across a restart of the process (backends.holds):
an engine built anew over the same holds file is the process restarted."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine import until, work

from comfyrun.backends import control
from comfyrun.backends.holds import Hold, HoldFile
from comfyrun.core.job import JobStatus

Make = Any


def holds_file(tmp_path: Path, worker: str = "host:ab12cd34:0") -> HoldFile:
    return HoldFile.of_worker(tmp_path, worker)


async def test_a_drained_backend_comes_back_drained_and_takes_no_job(
    make_engine: Make, tmp_path: Path
) -> None:
    before = await make_engine(("a", "b"), holds=holds_file(tmp_path))
    control.drain(before.pool, control.backend_of(before.pool, "a"))
    await control.holds_kept(before.pool)

    after = await make_engine(("a", "b"), holds=holds_file(tmp_path))
    held = control.backend_of(after.pool, "a")
    assert held.info().draining and held.info().state == "draining"
    for _ in range(3):
        job = await after.submit(work(0.01))
        done = await after.wait(job.id)
        assert done.status is JobStatus.SUCCEEDED and done.backend == "b"
    assert after.servers["a"].ran == []


async def test_resume_clears_the_hold_across_a_restart(make_engine: Make, tmp_path: Path) -> None:
    before = await make_engine(("a",), holds=holds_file(tmp_path))
    backend = control.backend_of(before.pool, "a")
    control.drain(before.pool, backend)
    await control.holds_kept(before.pool)
    assert holds_file(tmp_path).read() == {"a": Hold(drained=True)}
    control.resume(before.pool, backend)
    await control.holds_kept(before.pool)
    assert holds_file(tmp_path).read() == {}

    after = await make_engine(("a",), holds=holds_file(tmp_path))
    assert not control.backend_of(after.pool, "a").info().draining
    job = await after.submit(work(0.01))
    assert (await after.wait(job.id)).backend == "a"


async def test_a_stopped_managed_backend_is_not_started_after_a_restart_until_start(
    managed_engine: Make, tmp_path: Path
) -> None:
    """Even started eagerly (lazy = false), a backend an admin stopped stays stopped: jobs go
    to the other backend until `start`; started, it is started again after the next restart."""
    before, _ = await managed_engine("u", holds=holds_file(tmp_path), eager=True)
    control.stop(before.pool, control.backend_of(before.pool, "m"), force=True)
    await control.holds_kept(before.pool)
    await until(lambda: control.backend_of(before.pool, "m").info().state == "stopped")

    after, process = await managed_engine("u", holds=holds_file(tmp_path), eager=True)
    backend = control.backend_of(after.pool, "m")
    job = await after.submit(work(0.01))
    done = await after.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.backend == "u"
    info = backend.info()
    assert info.kept_stopped and info.state == "stopped" and process.starts == 0
    assert backend.view().lazy_start is False

    control.start(after.pool, backend)
    await control.holds_kept(after.pool)
    await until(lambda: process.state == "ready")
    assert process.starts == 1 and not backend.info().kept_stopped

    again, restarted = await managed_engine("u", holds=holds_file(tmp_path), eager=True)
    await until(lambda: restarted.starts == 1)  # eager again: no hold left
    assert not control.backend_of(again.pool, "m").info().kept_stopped


async def test_resume_of_a_stopped_managed_backend_is_kept(
    managed_engine: Make, tmp_path: Path
) -> None:
    before, _ = await managed_engine(holds=holds_file(tmp_path))
    backend = control.backend_of(before.pool, "m")
    control.stop(before.pool, backend, force=True)
    await control.holds_kept(before.pool)
    assert holds_file(tmp_path).read() == {"m": Hold(kept_stopped=True)}
    control.resume(before.pool, backend)
    await control.holds_kept(before.pool)

    after, process = await managed_engine(holds=holds_file(tmp_path))
    assert not control.backend_of(after.pool, "m").info().kept_stopped
    job = await after.submit(work(0.01))
    assert (await after.wait(job.id)).backend == "m"  # started lazily by the job
    assert process.starts == 1


async def test_two_workers_of_one_data_dir_keep_their_own_holds(
    make_engine: Make, tmp_path: Path
) -> None:
    first, second = holds_file(tmp_path, "h:1:0"), holds_file(tmp_path, "h:1:1")
    one = await make_engine(("a", "b"), holds=first)
    two = await make_engine(("a", "b"), holds=second)
    control.drain(one.pool, control.backend_of(one.pool, "a"))
    control.drain(two.pool, control.backend_of(two.pool, "b"))
    await control.holds_kept(one.pool)
    await control.holds_kept(two.pool)
    assert first.path != second.path and first.path.parent == tmp_path / "worker"

    one_again = await make_engine(("a", "b"), holds=first)
    two_again = await make_engine(("a", "b"), holds=second)
    assert [b.name for b in one_again.pool.backends if b.draining] == ["a"]
    assert [b.name for b in two_again.pool.backends if b.draining] == ["b"]


async def test_a_hold_on_a_backend_no_longer_configured_is_dropped(
    make_engine: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = holds_file(tmp_path)
    file.write({"gone": Hold(drained=True), "a": Hold(drained=True)})
    with caplog.at_level(logging.WARNING, logger="comfyrun.backends.holds"):
        engine = await make_engine(("a", "b"), holds=file)
    assert control.backend_of(engine.pool, "a").draining
    assert any("gone" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)
    await control.holds_kept(engine.pool)
    assert file.read() == {"a": Hold(drained=True)}


async def test_a_kept_stop_of_a_backend_now_configured_by_url_drains_it(
    make_engine: Make, tmp_path: Path
) -> None:
    file = holds_file(tmp_path)
    file.write({"a": Hold(kept_stopped=True)})
    engine = await make_engine(("a", "b"), holds=file)
    info = control.backend_of(engine.pool, "a").info()
    assert info.draining and not info.kept_stopped  # as `stop` holds a URL backend


async def test_a_restart_under_way_is_not_kept(managed_engine: Make, tmp_path: Path) -> None:
    engine, _ = await managed_engine(holds=holds_file(tmp_path))
    backend = control.backend_of(engine.pool, "m")
    job = await engine.submit(work(1.0, steps=10))
    await until(lambda: job.id in backend.jobs)
    control.drain(engine.pool, backend)
    control.resume(engine.pool, backend)
    control.restart(engine.pool, backend)  # waits for the job: restart_pending meanwhile
    # the save the drain started writes the holds as they are now, the restart pending
    await control.holds_kept(engine.pool)
    assert backend.restart_pending and backend.info().draining
    assert holds_file(tmp_path).read() == {}


def test_a_file_that_cannot_be_read_holds_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = holds_file(tmp_path)
    file.path.parent.mkdir(parents=True)
    file.path.write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="comfyrun.backends.holds"):
        assert file.read() == {}
    assert "cannot be read" in caplog.text
    file.write({"a": Hold(drained=True, kept_stopped=True)})
    data = json.loads(file.path.read_text(encoding="utf-8"))
    assert data["backends"] == {"a": {"drained": True, "kept_stopped": True}}
    assert [p.name for p in file.path.parent.iterdir()] == [file.path.name]  # no tmp left
