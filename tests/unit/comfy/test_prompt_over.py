"""A success is settled as ComfyUI says so; the prompt's end (`executing` null) comes after, and
`prompt_over` is its future (comfy.socket_events), which a run waits for before it gives its
backend back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from comfyrun.comfy import messages as m
from comfyrun.comfy.client import ComfyClient
from comfyrun.comfy.socket_events import prompt_end

IMAGE = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}


def ran(client: ComfyClient, prompt_id: str) -> None:
    for message in (m.ExecutionStart(prompt_id), *OUTCOMES["success"](prompt_id)):
        client._on_message(message)


#: What ComfyUI sends for a prompt from its start to its outcome, by the outcome.
OUTCOMES: dict[str, Callable[[str], tuple[m.Message, ...]]] = {
    "success": lambda p: (
        m.Executing(node="1", prompt_id=p),
        m.Executed(p, "1", IMAGE),
        m.ExecutionSuccess(p),
    ),
    "error": lambda p: (m.ExecutionError(p, "1", "Boom", "RuntimeError", "boom"),),
    "interrupted": lambda p: (m.ExecutionInterrupted(p, "1", "KSampler"),),
}


@pytest.mark.parametrize("status", list(OUTCOMES))
async def test_an_outcome_settles_as_it_is_told_and_prompt_over_waits_for_the_end(
    status: str,
) -> None:
    client = ComfyClient("http://127.0.0.1:1")
    watch = client.watch("p")
    for message in (m.ExecutionStart("p"), *OUTCOMES[status]("p")):
        client._on_message(message)
    result = await asyncio.wait_for(watch.settled(), 1)
    assert result.status == status
    if status == "success":
        assert [f.filename for f in result.files] == ["a.png"]
    over = client.prompt_over("p")
    assert over is not None and not over.done()
    assert prompt_end(client, "p") is over
    client._on_message(m.Status(queue_remaining=0))
    assert not over.done()
    client._on_message(m.Executing(node=None, prompt_id="p"))
    assert over.done() and client.prompt_over("p") is None


async def test_a_prompt_whose_outcome_was_missed_settles_from_its_history() -> None:
    client = ComfyClient("http://127.0.0.1:1")
    watch = client.watch("r")
    client._on_message(m.ExecutionStart("r"))
    client._on_message(m.Executing(node=None, prompt_id="r"))  # its outcome never heard
    assert not watch.done and watch.needs_history and client.prompt_over("r") is None


async def test_a_connection_that_drops_ends_every_wait_and_so_does_closing() -> None:
    client = ComfyClient("http://127.0.0.1:1")
    for prompt_id in ("a", "b"):
        client.watch(prompt_id)
        ran(client, prompt_id)
    a, b = client.prompt_over("a"), client.prompt_over("b")
    assert a is not None and b is not None
    client._on_socket_state(False)  # its `executing` null can no longer come
    assert a.done() and b.done() and client.prompt_over("a") is None
    client.watch("c")
    ran(client, "c")
    c = client.prompt_over("c")
    assert c is not None
    await client.close()
    assert c.done()


async def test_a_stand_in_client_without_it_has_no_end_to_wait_for() -> None:
    assert prompt_end(object(), "p") is None
    assert prompt_end(ComfyClient("http://127.0.0.1:1"), None) is None
