"""CPU per request of comfyrun's app, its lean request handler beside FastAPI's own, in one run.

Each variant is the app `comfyrun api` serves (SQLite in a temporary folder, new for each
round), called in this process through ASGI (no sockets, no client: what is measured is the
app's and its store thread's CPU, `time.process_time`). Rounds alternate between the variants
so that this machine's drift hits both alike; the table gives the median of the rounds and
the ratio.

    .venv/bin/python bench/request_cpu.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from comfyrun.api.app import create_app
from comfyrun.config import Role, load_settings
from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench
from hot_path import workflow


async def call(app: Any, method: str, path: str, body: bytes = b"", query: str = "") -> Any:
    """One request through the app's ASGI interface; (status, body)."""
    headers = [(b"host", b"bench"), (b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    out: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    await app(scope, receive, send)
    status = out[0]["status"]
    return status, b"".join(m.get("body", b"") for m in out[1:])


async def burst(n: int, concurrency: int, one: Callable[[], Awaitable[None]]) -> float:
    """CPU seconds of this process per request, for `n` requests `concurrency` at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def guarded() -> None:
        async with sem:
            await one()

    start = time.process_time()
    await asyncio.gather(*(guarded() for _ in range(n)))
    return (time.process_time() - start) / n


@asynccontextmanager
async def fresh_app(
    lean: bool, queued: int = 1, finished: int = 0
) -> AsyncIterator[tuple[Any, str]]:
    """The app of `comfyrun api` on a new SQLite database with `queued` jobs (the first
    `finished` of them run to success, by the store, as a worker would), and the id of the
    first."""
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(None, role=Role.API, data_dir=Path(folder))
        app = create_app(settings, lean=lean)
        async with app.router.lifespan_context(app):
            ids = []
            for _ in range(max(queued, finished, 1)):
                body = json.dumps({"workflow": workflow()}).encode()
                status, reply = await call(app, "POST", "/api/v2/jobs", body)
                assert status == 201, reply
                ids.append(json.loads(reply)["id"])
            store = app.state.ctx.store
            for _ in range(finished):
                job = await store.claim("bench", 60)
                assert job is not None
                await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
            yield app, ids[0]


def submit(app: Any, job_id: str) -> Callable[[], Awaitable[None]]:
    async def one() -> None:
        body = json.dumps({"workflow": workflow()}).encode()
        status, reply = await call(app, "POST", "/api/v2/jobs", body)
        assert status == 201, reply

    return one


def submit_prompt(app: Any, job_id: str) -> Callable[[], Awaitable[None]]:
    async def one() -> None:
        body = json.dumps({"prompt": workflow(), "client_id": "bench"}).encode()
        status, reply = await call(app, "POST", "/prompt", body)
        assert status == 200, reply

    return one


def get(path: str, expect: int = 200) -> Callable[[Any, str], Callable[[], Awaitable[None]]]:
    def make(app: Any, job_id: str) -> Callable[[], Awaitable[None]]:
        route, _, query = path.format(id=job_id).partition("?")

        async def one() -> None:
            status, reply = await call(app, "GET", route, query=query)
            assert status == expect, reply

        return one

    return make


#: What is asked, how many at a time, in how many jobs (queued, of which finished), a round's
#: share of --requests: the submits together (their commits grouped, as under load), the reads
#: one by one (no store thread to wait for between them: the app's own CPU). The last two are
#: what ComfyUI's editor asks on each change of the queue.
KINDS: dict[str, tuple[Callable[[Any, str], Callable[[], Awaitable[None]]], int, int, int, int]] = {
    "POST /api/v2/jobs, 32 at a time": (submit, 32, 1, 0, 1),
    "POST /prompt (ComfyUI's), 32 at a time": (submit_prompt, 32, 1, 0, 1),
    "GET /api/v2/jobs/{id} (queued)": (get("/api/v2/jobs/{id}"), 1, 1, 0, 1),
    "GET /api/v2/stats": (get("/api/v2/stats"), 1, 1, 0, 1),
    "GET /history/{id} (ComfyUI's)": (get("/history/{id}"), 1, 1, 0, 1),
    "GET /queue (ComfyUI's), 1,000 queued": (get("/queue"), 1, 1000, 0, 50),
    "GET /history?max_items=64, 1,000 finished": (get("/history?max_items=64"), 1, 1, 1000, 20),
    "GET /history (a script's), 1,000 finished": (get("/history"), 1, 1, 1000, 50),
}


async def main(args: argparse.Namespace) -> None:
    """Each round, each variant on a new database (the queue grows alike in both)."""
    os.environ.setdefault("COMFYRUN_QUEUE_MAX", "100000000")
    results: dict[tuple[str, bool], list[float]] = {}
    for kind, (make, at_once, queued, finished, share) in KINDS.items():
        n = max(1, args.requests // share)
        for _ in range(args.rounds):
            for lean in (False, True):
                async with fresh_app(lean, queued, finished) as (app, job_id):
                    await burst(max(1, 200 // share), at_once, make(app, job_id))  # warm up
                    cpu = await burst(n, at_once, make(app, job_id))
                results.setdefault((kind, lean), []).append(cpu)
    print(
        f"CPU per request, ms (median of {args.rounds} rounds of "
        f"{args.requests}; {os.cpu_count()} CPUs)"
    )
    width = max(len(k) for k in KINDS)
    print(f"  {'':<{width}}  {'FastAPI':>8}  {'lean':>8}  lean/FastAPI")
    for kind in KINDS:
        theirs = statistics.median(results[(kind, False)]) * 1000
        ours = statistics.median(results[(kind, True)]) * 1000
        print(f"  {kind:<{width}}  {theirs:8.3f}  {ours:8.3f}  {ours / theirs:8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
