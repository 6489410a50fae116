"""The per-prompt tracker, replaying the recorded websocket transcripts of real ComfyUI."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from tests.support.comfy import SINGLE_PROMPT_RUNS, dig, load, messages

from comfyrun.comfy import messages as m
from comfyrun.comfy.errors import ComfyExecutionError, ComfyInterrupted, ComfyPromptLost
from comfyrun.comfy.history import parse_history
from comfyrun.comfy.outputs import FileRef
from comfyrun.comfy.result import result_from_history, result_from_tracker
from comfyrun.comfy.tracker import PromptState, PromptTracker


def replay(
    shared_dir: Path, name: str, path: tuple[str, ...]
) -> tuple[PromptTracker, list[m.Message]]:
    msgs = messages(dig(load(shared_dir, name), path))
    prompt_id = next(x.prompt_id for x in msgs if isinstance(x, m.ExecutionStart))
    tracker = PromptTracker(prompt_id)
    for message in msgs:
        tracker.feed(message)
    return tracker, msgs


@pytest.mark.parametrize(("name", "ws_path", "history_path"), SINGLE_PROMPT_RUNS)
def test_tracker_agrees_with_history(
    shared_dir: Path, name: str, ws_path: tuple[str, ...], history_path: tuple[str, ...]
) -> None:
    tracker, _ = replay(shared_dir, name, ws_path)
    body = dig(load(shared_dir, name), history_path)
    entry = parse_history(body, tracker.prompt_id)
    assert entry is not None
    assert tracker.done and tracker.finished
    from_ws = result_from_tracker(tracker)
    from_history = result_from_history(entry)
    assert from_ws.status == from_history.status
    assert from_ws.outputs == from_history.outputs
    assert from_ws.cached_nodes == from_history.cached_nodes
    assert [type(x) for x in from_ws.messages] == [type(x) for x in from_history.messages]
    assert type(from_ws.error) is type(from_history.error)


@pytest.mark.parametrize(("name", "ws_path", "history_path"), SINGLE_PROMPT_RUNS)
def test_an_outcome_is_settled_as_comfyui_tells_it_with_the_whole_run_s_result(
    shared_dir: Path, name: str, ws_path: tuple[str, ...], history_path: tuple[str, ...]
) -> None:
    """Real ComfyUI's runs: a prompt is settled as its `execution_success` (`_error`,
    `_interrupted`) comes (ComfyUI then still writes its history, and may unload its models,
    before `executing` null), with the result the whole run gives."""
    msgs = messages(dig(load(shared_dir, name), ws_path))
    prompt_id = next(x.prompt_id for x in msgs if isinstance(x, m.ExecutionStart))
    tracker = PromptTracker(prompt_id)
    settled_at, early = None, None
    for i, message in enumerate(msgs):
        tracker.feed(message)
        if early is None and tracker.terminal:
            settled_at, early = i, result_from_tracker(tracker)
    whole, _ = replay(shared_dir, name, ws_path)
    assert settled_at is not None and early is not None
    outcome = m.ExecutionSuccess | m.ExecutionError | m.ExecutionInterrupted
    assert isinstance(msgs[settled_at], outcome)
    assert any(isinstance(x, m.Executing) and x.node is None for x in msgs[settled_at:])
    final = result_from_tracker(whole)
    assert (early.status, early.outputs, early.cached_nodes) == (
        final.status,
        final.outputs,
        final.cached_nodes,
    )
    assert [type(x) for x in early.messages] == [type(x) for x in final.messages]
    assert type(early.error) is type(final.error) and str(early.error) == str(final.error)


def test_success_run(shared_dir: Path) -> None:
    tracker, _ = replay(shared_dir, "ws_success_run.json", ("ws_messages",))
    assert tracker.state is PromptState.SUCCESS
    assert tracker.cached_nodes == ()
    assert tracker.completed_nodes == {"1", "2", "3", "4"}
    result = result_from_tracker(tracker)
    assert result.ok and result.error is None
    assert [f.filename for f in result.files] == [
        "ComfyUI_temp_okyrs_00001_.png",
        "protocap_00053_.png",
    ]
    saved = result.outputs["3"][0]
    assert isinstance(saved, FileRef) and saved.type == "output" and saved.media_kind == "image"


def test_cached_rerun_reports_old_filenames(shared_dir: Path) -> None:
    tracker, _ = replay(shared_dir, "ws_success_cached_rerun.json", ("ws_messages",))
    assert tracker.state is PromptState.SUCCESS
    assert set(tracker.cached_nodes) == {"1", "2", "3", "4"}
    assert tracker.current_node is None
    result = result_from_tracker(tracker)
    assert {f.filename for f in result.files} == {
        "protocap_00053_.png",
        "ComfyUI_temp_okyrs_00001_.png",
    }
    assert set(result.reused_outputs) == {"3", "4"}


def test_partial_cache_reuses_only_unchanged_outputs(shared_dir: Path) -> None:
    tracker, _ = replay(shared_dir, "ws_success_partial_cache.json", ("ws_messages",))
    result = result_from_tracker(tracker)
    assert result.ok
    assert set(result.reused_outputs) == set(result.outputs) & set(tracker.cached_nodes)
    assert set(result.reused_outputs) != set(result.outputs)


def test_runtime_error_keeps_earlier_outputs(shared_dir: Path) -> None:
    tracker, _ = replay(shared_dir, "ws_runtime_error.json", ("ws_messages",))
    assert tracker.state is PromptState.ERROR
    result = result_from_tracker(tracker)
    assert result.status == "error"
    assert isinstance(result.error, ComfyExecutionError)
    assert result.error.node_id == "1"
    assert result.error.node_type == "CheckpointLoaderSimple"
    assert result.error.exception_type == "safetensors._safetensors_rust.SafetensorError"
    assert result.error.traceback and "execution.py" in result.error.traceback
    assert not result.error.out_of_memory
    assert list(result.outputs) == ["6"]
    with pytest.raises(ComfyExecutionError):
        result.raise_for_status()


def test_interrupt_mid_sampler(shared_dir: Path) -> None:
    tracker, _ = replay(
        shared_dir,
        "ws_sampler_progress_previews_interrupt.json",
        ("interrupt_mid_ksampler", "ws_messages"),
    )
    assert tracker.state is PromptState.INTERRUPTED
    result = result_from_tracker(tracker)
    assert isinstance(result.error, ComfyInterrupted)
    assert result.error.node_type == "KSampler"
    assert result.outputs == {}


def test_sampler_progress_and_fraction(shared_dir: Path) -> None:
    data = load(shared_dir, "ws_sampler_progress_previews_interrupt.json")
    msgs = messages(data["interrupt_mid_ksampler"]["ws_messages"])
    prompt_id = data["interrupt_mid_ksampler"]["post"]["body"]["prompt_id"]
    prompt = data["interrupt_mid_ksampler"]["post"]["request"]["json"]["prompt"]
    tracker = PromptTracker(prompt_id, node_ids=prompt)
    seen: list[float] = []
    for message in msgs:
        tracker.feed(message)
        if isinstance(message, m.Progress):
            assert tracker.step == message
            assert tracker.current_node == "5"
            fraction = tracker.fraction
            assert fraction is not None
            seen.append(fraction)
    assert seen == sorted(seen) and len(seen) == 3
    assert 0 < seen[0] < seen[-1] < 1


def test_success_with_progress_reaches_one(shared_dir: Path) -> None:
    data = load(shared_dir, "ws_sampler_progress_previews_interrupt.json")
    case = data["client_with_supports_preview_metadata"]
    tracker = PromptTracker(
        case["post"]["body"]["prompt_id"], node_ids=case["post"]["request"]["json"]["prompt"]
    )
    fractions = []
    for message in messages(case["ws_messages"]):
        tracker.feed(message)
        fractions.append(tracker.fraction or 0.0)
    assert tracker.state is PromptState.SUCCESS
    assert fractions[-1] == 1.0
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(fractions))


def test_reconnect_mid_run_with_legacy_executing(shared_dir: Path) -> None:
    data = load(shared_dir, "ws_reconnect.json")
    first = messages(data["first_socket_before_disconnect"])
    second = messages(data["reconnected_socket_all"])
    prompt_id = next(x.prompt_id for x in first if isinstance(x, m.ExecutionStart))
    tracker = PromptTracker(prompt_id)
    for message in first:
        tracker.feed(message)
    assert (tracker.state, tracker.current_node) == (PromptState.RUNNING, "2")
    legacy = second[1]
    assert isinstance(legacy, m.Executing) and legacy.prompt_id is None
    for message in second:
        tracker.feed(message)
    assert tracker.state is PromptState.SUCCESS and tracker.done
    assert "4" in tracker.outputs


def test_missed_start_still_runs() -> None:
    tracker = PromptTracker("p")
    tracker.feed(m.Executing(node="3", prompt_id="p"))
    assert tracker.state is PromptState.RUNNING


def test_other_prompts_are_ignored(shared_dir: Path) -> None:
    tracker = PromptTracker("someone-else")
    for message in messages(load(shared_dir, "ws_success_run.json")["ws_messages"]):
        assert not tracker.feed(message) or isinstance(message, m.Executing)
    assert tracker.state is PromptState.QUEUED and tracker.outputs == {}


def test_finished_without_outcome_is_not_done() -> None:
    tracker = PromptTracker("p")
    tracker.feed(m.ExecutionStart("p"))
    tracker.feed(m.Executing(node=None, prompt_id="p"))
    assert tracker.finished and not tracker.terminal and not tracker.done
    with pytest.raises(ValueError):
        result_from_tracker(tracker)


def test_events_after_the_outcome_change_nothing() -> None:
    tracker = PromptTracker("p")
    tracker.feed(m.ExecutionStart("p"))
    tracker.feed(m.ExecutionSuccess("p"))
    tracker.feed(m.ExecutionError("p", "1", "X", "RuntimeError", "late"))
    tracker.feed(m.Executed("p", "9", {"images": [{"filename": "late.png"}]}))
    assert tracker.state is PromptState.SUCCESS and tracker.error is None
    assert tracker.outputs == {}


def test_lost_prompt() -> None:
    tracker = PromptTracker("p")
    tracker.mark_lost()
    assert tracker.done
    result = result_from_tracker(tracker)
    assert result.status == "lost" and isinstance(result.error, ComfyPromptLost)


def test_history_settles_a_tracker(shared_dir: Path) -> None:
    data = load(shared_dir, "queue_interrupt.json")
    body = data["history_interrupted"]["body"]
    (prompt_id,) = body
    entry = parse_history(body, prompt_id)
    assert entry is not None
    tracker = PromptTracker(prompt_id)
    tracker.feed(m.ExecutionStart(prompt_id))
    tracker.apply_history(entry)
    assert tracker.state is PromptState.INTERRUPTED and tracker.done
