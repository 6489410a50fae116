"""Load check: many stalled request bodies must not slow normal requests down.

    .venv/bin/python bench/stalled_bodies.py --stalled 1000 --idle-timeout 10

Starts `comfyrun serve` (no backends, a SQLite queue in a temporary folder) as its own process
on 127.0.0.1, opens `--stalled` connections that each announce a 1 MB body on a submit route
of some dialect, send a few bytes and then nothing; while they hang, one client sends normal
requests back to back (health, a job list, a small v2 submission) and records each latency.
Prints the latencies (p50, p99, max), then waits for the server to time the stalled bodies out
(408) and close their connections, and counts how many it did. Exits 1 when p99 is over
`--p99-ms` (100) or a stalled connection was not answered 408 and closed.

Loopback only, bounded in count (`--stalled`, `--requests`) and time (`--deadline`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
from tests.support.api import ServerProcess, tiny_workflow

#: Submit routes of each dialect the stalled bodies are spread over.
STALL_PATHS = ("/api/v2/jobs", "/prompt", "/api/prompt", "/run", "/runsync", "/api/v1/tasks")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def stall(host: str, port: int, path: str, opened: asyncio.Event) -> int | None:
    """One connection that announces a body and stalls; returns the status the server finally
    answered (None if it answered nothing before closing)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000000\r\n\r\n{"
        )
        writer.write(head.encode())
        await writer.drain()
        opened.set()
        raw = await reader.read(-1)  # until the server closes the connection
    except ConnectionError:
        return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    line = raw.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None


async def normal_requests(url: str, count: int) -> list[float]:
    """`count` requests back to back on one keep-alive client; their latencies in ms."""
    latencies: list[float] = []
    calls = itertools.cycle(["health", "list", "submit"])
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for i, call in zip(range(count), calls, strict=False):
            started = time.perf_counter()
            if call == "health":
                r = await client.get("/api/v2/health")
            elif call == "list":
                r = await client.get("/api/v2/jobs", params={"limit": 10})
            else:
                r = await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(i)})
            latencies.append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
    return latencies


async def run(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.stalled + 512))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it
    tmp = Path(tempfile.mkdtemp(prefix="comfyrun-bench-stall-"))
    server = ServerProcess(
        ["serve", "--port", "0", "--data-dir", str(tmp), "--log-level", "WARNING"],
        log_path=tmp / "server.log",
        env={
            "COMFYRUN_BODY_IDLE_TIMEOUT_S": str(args.idle_timeout),
            "COMFYRUN_QUEUE_MAX": "1000000",
        },
    )
    url = await asyncio.to_thread(server.wait_ready)
    parts = urlsplit(url)
    host, port = str(parts.hostname), int(parts.port or 80)
    try:
        async with asyncio.timeout(args.deadline):
            await normal_requests(url, 30)  # warm up
            baseline = await normal_requests(url, args.requests)
            opened = [asyncio.Event() for _ in range(args.stalled)]
            started = time.monotonic()
            stalls = [
                asyncio.create_task(stall(host, port, STALL_PATHS[i % len(STALL_PATHS)], ev))
                for i, ev in enumerate(opened)
            ]
            await asyncio.gather(*(ev.wait() for ev in opened))
            opened_s = time.monotonic() - started
            loaded = await normal_requests(url, args.requests)
            under_load_s = time.monotonic() - started
            statuses = await asyncio.gather(*stalls)
            all_closed_s = time.monotonic() - started
    finally:
        server.stop()
    timed_out = sum(1 for s in statuses if s == 408)
    report = {
        "stalled_connections": args.stalled,
        "opened_in_s": round(opened_s, 2),
        "normal_requests": args.requests,
        "baseline_ms": summary(baseline),
        "with_stalled_ms": summary(loaded),
        "stalled_still_open_during_measurement": under_load_s < args.idle_timeout,
        "stalled_answered_408_and_closed": timed_out,
        "all_stalled_closed_after_s": round(all_closed_s, 2),
    }
    print(json.dumps(report, indent=2))
    p99 = pct(loaded, 99)
    ok = p99 <= args.p99_ms and timed_out == args.stalled
    print(f"p99 with {args.stalled} stalled bodies: {p99:.1f} ms -> {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(pct(values, 50), 2),
        "p99": round(pct(values, 99), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stalled", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    parser.add_argument("--p99-ms", type=float, default=100.0)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
