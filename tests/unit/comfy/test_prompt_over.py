"""A success is settled as ComfyUI says so; the prompt's end (`executing` null) comes after, and
`prompt_over` is its future (comfy.socket_events), which a run waits for before it gives its
backend back."""

from __future__ import annotations

import asyncio

from comfyrun.comfy import messages as m
from comfyrun.comfy.client import ComfyClient
from comfyrun.comfy.socket_events import prompt_end

IMAGE = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}


def ran(client: ComfyClient, prompt_id: str) -> None:
    for message in (
        m.ExecutionStart(prompt_id),
        m.Executing(node="1", prompt_id=prompt_id),
        m.Executed(prompt_id, "1", IMAGE),
        m.ExecutionSuccess(prompt_id),
    ):
        client._on_message(message)


async def test_a_success_settles_before_the_end_which_prompt_over_waits_for() -> None:
    client = ComfyClient("http://127.0.0.1:1")
    watch = client.watch("p")
    ran(client, "p")
    result = await asyncio.wait_for(watch.settled(), 1)
    assert result.ok and [f.filename for f in result.files] == ["a.png"]
    over = client.prompt_over("p")
    assert over is not None and not over.done()
    assert prompt_end(client, "p") is over
    client._on_message(m.Status(queue_remaining=0))
    assert not over.done()
    client._on_message(m.Executing(node=None, prompt_id="p"))
    assert over.done() and client.prompt_over("p") is None


async def test_a_failure_settles_as_it_is_told_and_its_end_comes_after() -> None:
    client = ComfyClient("http://127.0.0.1:1")
    watch = client.watch("q")
    client._on_message(m.ExecutionStart("q"))
    client._on_message(m.ExecutionError("q", "1", "Boom", "RuntimeError", "boom"))
    assert (await asyncio.wait_for(watch.settled(), 1)).status == "error"
    over = client.prompt_over("q")
    assert over is not None and not over.done()
    client._on_message(m.Executing(node=None, prompt_id="q"))
    assert over.done() and client.prompt_over("q") is None


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
