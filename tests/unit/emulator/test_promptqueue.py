"""The prompt queue and history, without a server."""

from __future__ import annotations

from typing import Any

from comfyrun.comfy.emulator.promptqueue import PromptQueue


def _queue() -> tuple[PromptQueue, list[int]]:
    changes: list[int] = []
    return PromptQueue(changes.append), changes


def _item(number: float, prompt_id: str, extra: dict[str, Any] | None = None) -> list[Any]:
    return [number, prompt_id, {"1": {}}, extra or {}, ["1"]]


def test_lowest_number_runs_first_and_changes_are_reported() -> None:
    queue, changes = _queue()
    for number, prompt_id in ((3, "c"), (-4, "front"), (1, "a"), (-1000.5, "explicit")):
        queue.put(_item(number, prompt_id))
    assert changes == [1, 2, 3, 4]
    order = []
    for _ in range(4):
        got = queue.get(timeout=1)
        assert got is not None
        order.append(got[0][1])
        queue.task_done(
            got[1], {}, {}, {"status_str": "success", "completed": True, "messages": []}
        )
    assert order == ["explicit", "front", "a", "c"]
    assert queue.get(timeout=0.01) is None


def test_delete_and_wipe_touch_pending_only() -> None:
    queue, _ = _queue()
    for prompt_id in ("r", "p1", "p2"):
        queue.put(_item(len(prompt_id), prompt_id))
    got = queue.get(timeout=1)
    assert got is not None and got[0][1] == "r"
    assert not queue.delete("r") and not queue.delete("nope") and queue.delete("p1")
    queue.wipe()
    running, pending = queue.current()
    assert [i[1] for i in running] == ["r"] and pending == []


def test_history_strips_secrets_pages_and_overwrites_in_place() -> None:
    queue, _ = _queue()
    for prompt_id in ("a", "b", "c", "a"):
        queue.put(_item(1, prompt_id, {"client_id": "x", "api_key_comfy_org": "secret"}))
        got = queue.get(timeout=1)
        assert got is not None
        running, _ = queue.current()
        assert running[0][3]["api_key_comfy_org"] == "secret"
        queue.task_done(
            got[1],
            {"9": {"images": []}},
            {},
            {"status_str": "success", "completed": True, "messages": []},
        )
    assert list(queue.get_history()) == ["a", "b", "c"]
    assert queue.get_history("a")["a"]["prompt"][3] == {"client_id": "x"}
    assert list(queue.get_history(max_items=2)) == ["b", "c"]
    assert list(queue.get_history(max_items=1, offset=1)) == ["b"]
    assert queue.get_history("zzz") == {}
    queue.delete_history("b")
    assert list(queue.get_history()) == ["a", "c"]
    queue.wipe_history()
    assert queue.get_history() == {}
