"""Peak memory while a large output streams through OutputStorage.put() and .open().

    .venv/bin/python bench/large_output_memory.py                 # 500 MB, local and S3
    .venv/bin/python bench/large_output_memory.py --size-mb 100 --backend file

Each backend runs in a fresh child process so its peak RSS (getrusage ru_maxrss) is its own; the
S3 server (moto) runs in another process so the bytes it keeps do not count. Reported per
backend: RSS before streaming, peak RSS, their difference, the tracemalloc peak of Python
allocations during put+open, and throughput (informational: moto is not a real S3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

MiB = 1024 * 1024
CHUNK = 256 * 1024  # ComfyUI /view responses and local files arrive in chunks about this size


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def produce(total: int) -> AsyncIterator[bytes]:
    block = os.urandom(CHUNK)
    sent = 0
    while sent < total:
        n = min(CHUNK, total - sent)
        yield block[:n]
        sent += n


async def run_child(backend: str, size: int, endpoint: str | None) -> dict[str, object]:
    from comfyrun.outputs import OutputStorage
    from comfyrun.outputs.local import LocalOutputStorage
    from comfyrun.outputs.s3 import S3OutputStorage

    storage: OutputStorage
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "file":
            storage = LocalOutputStorage(Path(tmp))
        else:
            import boto3

            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            )
            client.create_bucket(Bucket="bench")
            storage = S3OutputStorage("bench", "outputs", client=client)
        # warm up imports, threads and connections with a small object first
        await storage.put("warm/0/x.bin", produce(MiB), content_type="application/octet-stream")
        async for _ in storage.open("warm/0/x.bin"):
            pass
        before = peak_rss_mib()
        tracemalloc.start()
        t0 = time.perf_counter()
        stored = await storage.put("job/9/big.mp4", produce(size), content_type="video/mp4")
        t1 = time.perf_counter()
        read = 0
        async for chunk in storage.open("job/9/big.mp4"):
            read += len(chunk)
        t2 = time.perf_counter()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        after = peak_rss_mib()
        assert stored.size_bytes == read == size, (stored.size_bytes, read, size)
        await storage.delete_prefix("job/")
        await storage.close()
    return {
        "backend": backend,
        "size_mib": round(size / MiB),
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(after, 1),
        "rss_growth_mib": round(after - before, 1),
        "tracemalloc_peak_mib": round(traced_peak / MiB, 1),
        "put_mib_s": round(size / MiB / (t1 - t0), 1),
        "open_mib_s": round(size / MiB / (t2 - t1), 1),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--backend", choices=["file", "s3", "all"], default="all")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = args.size_mb * MiB
    if args.child:
        print(json.dumps(asyncio.run(run_child(args.backend, size, args.endpoint))))
        return
    backends = ["file", "s3"] if args.backend == "all" else [args.backend]
    moto = None
    try:
        for backend in backends:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--backend",
                backend,
                "--size-mb",
                str(args.size_mb),
            ]
            if backend == "s3":
                moto, endpoint = start_moto()
                cmd += ["--endpoint", endpoint]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            print(out.strip(), flush=True)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)


if __name__ == "__main__":
    main()
