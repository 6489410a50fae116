"""The per-backend log file: tail, progress-bar lines, reading from an offset, rotation."""

from __future__ import annotations

from pathlib import Path

from comfyrun.backends.logs import ProcessLog


def test_tail_gives_the_last_non_empty_lines(tmp_path: Path) -> None:
    log = ProcessLog(tmp_path / "logs" / "gpu0.log")
    assert log.tail() == []
    with log.open_for_child() as f:
        f.write(b"one\n\ntwo\nthree\n")
    log.note("stopped")
    assert log.tail(3) == ["two", "three", "[comfyrun] stopped"]
    assert log.tail(0) == []


def test_a_progress_bar_shows_its_last_state(tmp_path: Path) -> None:
    log = ProcessLog(tmp_path / "gpu0.log")
    with log.open_for_child() as f:
        f.write(b" 10%|#  | 1/10\r 50%|### | 5/10\r100%|####| 10/10\nPrompt executed\n")
    assert log.tail(2) == ["100%|####| 10/10", "Prompt executed"]


def test_read_from_an_offset_sees_only_this_run(tmp_path: Path) -> None:
    log = ProcessLog(tmp_path / "gpu0.log")
    with log.open_for_child() as f:
        f.write(b"old run: address already in use\n")
    offset = log.size()
    with log.open_for_child() as f:
        f.write(b"new run\n")
    assert log.read_from(offset) == "new run\n"
    assert "old run" in log.read_from(0)


def test_a_big_log_is_rotated_once_at_the_next_start(tmp_path: Path) -> None:
    log = ProcessLog(tmp_path / "gpu0.log", max_bytes=100)
    with log.open_for_child() as f:
        f.write(b"x" * 200 + b"\n")
    with log.open_for_child() as f:
        f.write(b"fresh\n")
    assert log.tail() == ["fresh"]
    assert (tmp_path / "gpu0.log.1").stat().st_size == 201
