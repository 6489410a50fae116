"""Is a freshly started ComfyUI ready? A bounded poll of GET /system_stats that stops the moment
the child exits, and the optional warm-up prompt.

A process offers no event for "now listening", so polling is the right tool here; ComfyUI's plain
HTTP API has no completion event either, and the warm-up runs once per start.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from comfyrun.backends.process.spec import ManagedSpec


async def answers(http: httpx.AsyncClient, url: str) -> bool:
    """Whether ComfyUI at `url` answers GET /system_stats with 200."""
    try:
        response = await http.get(f"{url}/system_stats")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def wait_ready(proc: asyncio.subprocess.Process, url: str, spec: ManagedSpec) -> str | None:
    """None once the child answers; otherwise why not (it exited, or the time ran out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.ready_timeout_s
    exited = loop.create_task(proc.wait())
    timeout = httpx.Timeout(min(spec.health_timeout_s, spec.ready_timeout_s))
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            while True:
                probe = loop.create_task(answers(http, url))
                remaining = max(0.0, deadline - loop.time())
                await asyncio.wait(
                    {probe, exited}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if probe.done() and probe.result() and not exited.done():
                    return None
                if not probe.done():
                    probe.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await probe
                if exited.done():
                    return (
                        f"backend {spec.name!r}: ComfyUI exited with code {exited.result()} "
                        f"during start-up, before it answered on {url}; fix the error shown in "
                        "its log"
                    )
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return (
                        f"backend {spec.name!r}: ComfyUI did not answer GET /system_stats on "
                        f"{url} within {spec.ready_timeout_s:g}s; raise ready_timeout_s if it "
                        "loads slowly, or check its log"
                    )
                await asyncio.wait({exited}, timeout=min(spec.ready_interval_s, remaining))
    finally:
        if not exited.done():
            exited.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await exited


async def warm_up(proc: asyncio.subprocess.Process, url: str, spec: ManagedSpec) -> str | None:
    """Run the spec's warm-up prompt; None when it completed, otherwise why it failed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.ready_timeout_s
    body = {"prompt": dict(spec.warmup_prompt or {}), "client_id": "comfyrun-warmup"}
    timeout = httpx.Timeout(spec.health_timeout_s)
    name = spec.name
    async with httpx.AsyncClient(base_url=url, timeout=timeout, trust_env=False) as http:
        try:
            response = await http.post("/prompt", json=body)
            if response.status_code != 200:
                return f"backend {name!r}: the warm-up prompt was rejected: {response.text}"
            prompt_id = str(response.json()["prompt_id"])
            while loop.time() < deadline:
                if proc.returncode is not None:
                    return f"backend {name!r}: ComfyUI exited during the warm-up prompt"
                entry = (await http.get(f"/history/{prompt_id}")).json().get(prompt_id)
                if entry:
                    status = entry.get("status") or {}
                    if status.get("status_str") == "error":
                        return (
                            f"backend {name!r}: the warm-up prompt failed: {status.get('messages')}"
                        )
                    if status.get("completed", True):
                        return None
                await asyncio.sleep(spec.ready_interval_s)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return f"backend {name!r}: the warm-up prompt failed: {exc!r}"
    return f"backend {name!r}: the warm-up prompt did not finish within {spec.ready_timeout_s:g}s"


__all__ = ["answers", "wait_ready", "warm_up"]
