"""The hot path, side by side with ComfyUI (the emulator) driven directly, in one run.

    .venv/bin/python bench/hot_path.py                      # latency, 8-client throughput, budget
    .venv/bin/python bench/hot_path.py --fleet --postgres   # also the fleet and PostgreSQL set-ups
    .venv/bin/python bench/hot_path.py --idle-sockets 300   # also the face with editors open

Every figure is a zero-work job (EmptyImage 8x8 -> SaveImage, a fresh color each time) on
emulators started as their own processes, so what differs between the columns is comfyrun.

1. Added latency per job, for both faces, jobs one at a time, interleaved in rounds with the
   direct runs (so load on the shared machine hits all three alike):
   - direct: POST /prompt, /ws until `executing` null, GET /history/{id}, GET /view;
   - v2: POST /api/v2/jobs?wait=60, then GET the output URL;
   - ComfyUI face: the direct steps, against comfyrun.
   Added = comfyrun's time minus the direct median. Then the direct steps on comfyrun's own
   backend beside the direct one, 40 each: the two ComfyUIs should take about the same time
   (a managed emulator that walked its model folders at every prompt took 1-3 ms more).
2. Throughput, 8 clients each running jobs back to back, one backend: comfyrun's jobs/s as a
   share of the same backend driven directly; the clients on aiohttp (the lightest at hand,
   as for the fleet), then on httpx and websockets (each of which costs the shared cores ~3 ms
   of CPU a job more than aiohttp, taken from the servers measured).
3. The per-stage budget of one job through each face, from comfyrun's stage marks
   (comfyrun.stages, written by bench/traced_server.py) and the client's own marks, on one
   clock, over jobs of their own run after 1 (the marks cost the server ~0.5 ms of CPU a job,
   so 1 and 2 are timed with them off, as a user's server runs); marks that overlap the rest (a handed-off job's commit, the face's answer to POST
   /prompt) are timed beside them.
4. --fleet: 4 backends, 32 clients, SQLite `serve` (jobs/s after a warm-up, vs 4 emulators
   driven directly; the clients on aiohttp, as in 5, the lightest client at hand; the CPU a
   job of `serve` and of its emulators in the same seconds: their ratio moves less with the
   machine's speed than either, though still ~10 % between runs; bench/instructions.py is
   the steady measure; the share of a core `serve`'s event-loop thread used, and the share
   of the machine's CPU left idle, beside the idle of the direct run: when the cores idle
   while the loop is short of a whole core, what bounds the fleet is the turns of that one
   loop each job waits for, not the CPU; and the depth each backend ended at, core.pipeline: 4
   on these zero-work prompts, 2 would say the fleet no longer keeps ComfyUI's queues fed);
   enqueues/s (an api node, 32 clients submitting without waiting) beside GET /health/s.
5. --postgres: `comfyrun api` + 2 `comfyrun worker`s (2 emulators each) on PostgreSQL, 32 clients,
   vs 4 emulators driven directly, the CPU each process spent a job (api, workers, their
   emulators, PostgreSQL's server processes), comfyrun's (api + workers) against its
   emulators' in the same seconds (steadier than either alone, not steady: ~10 % between
   runs), and PostgreSQL's transactions a job
   (from pg_stat_database, over every job of the run, read after the nodes exit): each
   statement in autocommit is one, and so is each NOTIFY a listening node's server process
   relays (it reads the notification queue in a transaction of its own, reported only as it
   exits).

6. --idle-sockets N: the ComfyUI face's throughput with N more `/ws` sockets open and only
   listening (editors in browser tabs: every prompt broadcasts `status` to every socket),
   through `serve` and on the emulator directly.

With `--comfyui FOLDER` (and `--comfyui-python`, the Python that runs its main.py), 1-3 run
against a real ComfyUI instead of the emulator: one started from FOLDER for the direct column
and one that comfyrun `serve` runs as its managed backend (`--cpu` both).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
from tests.support.api import ServerProcess

from comfyrun.stages import STAGES

BENCH = Path(__file__).resolve().parent
#: Seconds of jobs run before a fleet's throughput is measured (not counted).
WARM_UP_S = 2.0
_colors = itertools.count(1)


#: Nodes added to every workflow by --workflow-kb (ComfyUI validates and runs only what leads
#: to an output: these cost it the parsing, as a real workflow's size does).
_padding: dict[str, Any] = {}


def pad_workflows(kb: float) -> None:
    """Every workflow from now on `kb` KB larger: PrimitiveString nodes of ~200 bytes each,
    connected to nothing."""
    node = {"class_type": "PrimitiveString", "inputs": {"value": "a photo of a cat, " * 9}}
    _padding.clear()
    _padding.update({str(100 + n): node for n in range(round(kb * 1000 / 200))})


def workflow() -> dict[str, Any]:
    color = next(_colors) % 16_777_216
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": f"h{color}"},
        },
        **_padding,
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process's main thread (its event loop's)."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))


def _stat_cpu_seconds(stat: Path) -> float:
    """utime + stime of a /proc `stat` file, in seconds."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_times() -> tuple[int, int]:
    """(idle, all) of this machine's CPU time so far, in ticks (/proc/stat; iowait is idle)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time left idle between two `machine_times()`."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cpu_ratio(ours_s: float, theirs_s: float, jobs: float) -> str:
    """CPU seconds of comfyrun and of its ComfyUI over `jobs` jobs: per job, and the ratio."""
    ours, theirs = ours_s / jobs * 1000, theirs_s / jobs * 1000
    return f"{ours:6.2f} / {theirs:6.2f} ms ({ours / max(theirs, 1e-9):.1f}x)"


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:6.2f} / {pct(values, 99) * 1000:6.2f} ms"


# --- processes ------------------------------------------------------------------------------


#: A real ComfyUI to measure against (--comfyui): (its folder, the Python that runs it).
RealComfy = tuple[Path, str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_emulator(
    tmp: Path,
    real: RealComfy | None = None,
    runner: list[str] | None = None,
    flags: list[str] | None = None,
) -> tuple[asyncio.subprocess.Process, str]:
    """An emulator (or, with `real`, a real ComfyUI on CPU) as its own process; its URL.
    `runner`: what runs the emulator's Python, before it (e.g. valgrind and its options);
    `flags`: more of its command line (ComfyUI's, or the emulator's own)."""
    folder = Path(tempfile.mkdtemp(dir=tmp, prefix="emu"))
    if real is None:
        command = [*(runner or []), sys.executable, "-m", "comfyrun.comfy.emulator", "--port", "0"]
    else:
        command = [real[1], str(real[0] / "main.py"), "--cpu", "--disable-auto-launch"]
        command += ["--port", str(free_port())]
    proc = await asyncio.create_subprocess_exec(
        *command, "--listen", "127.0.0.1",
        "--output-directory", str(folder / "out"), "--input-directory", str(folder / "in"),
        "--temp-directory", str(folder / "tmp"), *(flags or []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=None if real is None else real[0],
    )  # fmt: skip
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 180)).decode()
        if not line:
            raise RuntimeError("the emulator exited")
        if "To see the GUI go to:" in line:
            url = line.rsplit(" ", 1)[1].strip()
            break
    drain = asyncio.ensure_future(_drain(proc.stdout))  # its log must not fill the pipe
    _closing.add(drain)
    drain.add_done_callback(_closing.discard)
    return proc, url


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


@contextlib.asynccontextmanager
async def emulators(tmp: Path, n: int, real: RealComfy | None = None) -> AsyncIterator[list[str]]:
    started = [await start_emulator(tmp, real) for _ in range(n)]
    try:
        yield [url for _, url in started]
    finally:
        for proc, _ in started:
            proc.terminate()
            await proc.wait()


def fresh_outputs(tmp: Path) -> int:
    """Remove the images the emulators saved (the direct one's and comfyrun's managed one's):
    ComfyUI lists its output folder on every save (folder_paths.get_save_image_path), so its
    cost per job grows with the files there (~0.5 ms of CPU a job per 1,000 files here). Each
    column starts from an empty folder, so neither side pays for the other's jobs. No job of
    this bench is cached by ComfyUI (a new color each), so none refers to a file removed."""
    removed = 0
    for pattern in ("emu*/out/*.png", "*/backends/*/output/*.png"):
        for path in tmp.glob(pattern):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def comfyrun_process(
    tmp: Path,
    name: str,
    args: list[str],
    env: dict[str, str] | None = None,
    runner: list[str] | None = None,
) -> ServerProcess:
    data = tmp / name
    data.mkdir(exist_ok=True)
    proc = ServerProcess(
        [*args, "--port", "0", "--data-dir", str(data), "--log-level", "WARNING"],
        log_path=tmp / f"{name}.log",
        env={"COMFYRUN_QUEUE_MAX": "10000000", **(env or {})},
        entry=[str(BENCH / "traced_server.py")],
        runner=runner,
    )
    proc.wait_ready(600 if runner else 120)
    return proc


async def backend_url(http: httpx.AsyncClient, url: str) -> str:
    """The URL of comfyrun's (first) backend, from its /api/v2/backends."""
    backends = (await http.get(f"{url}/api/v2/backends")).json()["backends"]
    return str(backends[0]["url"])


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for _ in range(3000):
            if (await http.get("/ready")).status_code == 200:
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} never became ready")


# --- one job, three ways --------------------------------------------------------------------


async def comfy_face_run(
    http: httpx.AsyncClient, url: str, marks: dict[str, dict[str, float]] | None = None
) -> float:
    """ComfyUI's own API: what its script_examples do, timed from before the websocket to the
    output in hand (`marks`: the client's side of the face's budget, by prompt id). The socket
    is closed after that, untimed and not waited for: its closing handshake is the client
    library's (it sometimes waits out its 10 s close timeout against ComfyUI and comfyrun
    alike) and no part of the job."""
    client_id = uuid.uuid4().hex
    ws_url = url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    start = time.perf_counter()
    ws = await websockets.connect(ws_url, max_size=None)
    try:
        opened = time.perf_counter()
        r = await http.post(f"{url}/prompt", json={"prompt": workflow(), "client_id": client_id})
        r.raise_for_status()
        answered = time.perf_counter()
        prompt_id = r.json()["prompt_id"]
        while True:
            msg = await ws.recv()
            if isinstance(msg, bytes):
                continue
            data = json.loads(msg)
            node_done = data["type"] == "executing" and data["data"].get("node") is None
            if node_done and data["data"].get("prompt_id") == prompt_id:
                break
        told = time.perf_counter()
        history = (await http.get(f"{url}/history/{prompt_id}")).json()[prompt_id]
        read = time.perf_counter()
        image = history["outputs"]["2"]["images"][0]
        (await http.get(f"{url}/view", params=image)).raise_for_status()
        end = time.perf_counter()
        if marks is not None:
            marks[prompt_id] = dict(
                zip(FACE_MARKS, (start, opened, answered, told, read, end), strict=True)
            )
        return end - start
    finally:
        closing = asyncio.ensure_future(ws.close())
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)


#: Sockets being closed in the background (kept referenced until they are).
_closing: set[asyncio.Future[None]] = set()


async def v2_run(http: httpx.AsyncClient, url: str, marks: dict[str, dict[str, float]]) -> float:
    start = time.perf_counter()
    r = await http.post(f"{url}/api/v2/jobs", params={"wait": 60}, json={"workflow": workflow()})
    answered = time.perf_counter()
    job = r.json()
    assert job["status"] == "succeeded", job
    (await http.get(job["outputs"][0]["url"])).raise_for_status()
    end = time.perf_counter()
    marks[job["id"]] = {"sent": start, "answered": answered, "downloaded": end}
    return end - start


# The same two jobs on aiohttp, for the columns with 32 clients: httpx costs a client ~3 ms of
# CPU a request (pure Python), which on these shared cores is taken from the servers measured.


async def light_face_run(session: aiohttp.ClientSession, url: str) -> None:
    """`comfy_face_run` on aiohttp (its websocket too)."""
    client_id = uuid.uuid4().hex
    async with session.ws_connect(f"{url}/ws?clientId={client_id}", max_msg_size=0) as ws:
        body = {"prompt": workflow(), "client_id": client_id}
        async with session.post(f"{url}/prompt", json=body) as r:
            assert r.status == 200, await r.text()
            prompt_id = (await r.json())["prompt_id"]
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            node_done = data["type"] == "executing" and data["data"].get("node") is None
            if node_done and data["data"].get("prompt_id") == prompt_id:
                break
        async with session.get(f"{url}/history/{prompt_id}") as r:
            image = (await r.json())[prompt_id]["outputs"]["2"]["images"][0]
        async with session.get(f"{url}/view", params=image) as r:
            assert r.status == 200
            await r.read()


async def light_v2_run(session: aiohttp.ClientSession, url: str) -> None:
    """`v2_run` on aiohttp."""
    body = {"workflow": workflow()}
    async with session.post(f"{url}/api/v2/jobs", params={"wait": 60}, json=body) as r:
        job = await r.json()
    assert job["status"] == "succeeded", job
    async with session.get(job["outputs"][0]["url"]) as r:
        assert r.status == 200
        await r.read()


def light_session() -> aiohttp.ClientSession:
    """A client session keeping as many connections as the clients (no connection churn)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
    )


# --- throughput -----------------------------------------------------------------------------


async def drive(clients: int, seconds: float, one: Callable[[int], Awaitable[Any]]) -> float:
    """`clients` loops running jobs back to back for `seconds`; jobs/s."""
    done = 0
    stop = time.perf_counter() + seconds

    async def loop(i: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await one(i)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(clients)))
    return done / (time.perf_counter() - start)


def gc_pauses(log: Path) -> str:
    """The full collections (generation 2) in a log of bench/traced_server.py's, and the
    longest pause of any generation."""
    pauses = [line.split() for line in log.read_text().splitlines()]
    full = sum(1 for generation, _ in pauses if generation == "2")
    longest = max((float(ms) for _, ms in pauses), default=0.0)
    return f"{full:5d}, {longest:6.2f} ms"


# --- stage budget ---------------------------------------------------------------------------


#: The client's marks of one ComfyUI-face job: before the websocket, the socket open, POST
#: /prompt answered, `executing` null received, /history read, the /view file in hand.
FACE_MARKS = ("sent", "socket open", "prompt answered", "told done", "history read", "viewed")


def switch_stage_marks(server: ServerProcess, stage_log: Path, on: bool) -> None:
    """Switch the server's stage marks on or off (bench/traced_server.py), `stage_log`
    emptied before they go on; its signal handler runs at the request that follows (the
    caller makes one)."""
    if on:
        stage_log.write_text("")
    os.kill(server.proc.pid, signal.SIGUSR1 if on else signal.SIGUSR2)


def stage_marks(stage_log: Path) -> dict[str, dict[str, float]]:
    """The server's stage marks (comfyrun.stages, by bench/traced_server.py), by job id."""
    per_job: dict[str, dict[str, float]] = defaultdict(dict)
    for line in stage_log.read_text().splitlines():
        rec = json.loads(line)
        per_job[rec["job"]].setdefault(rec["stage"], rec["t"])
    return per_job


def budget(
    per_job: dict[str, dict[str, float]],
    marks: dict[str, dict[str, float]],
    order: list[str],
    aside: tuple[str, ...] = ("enqueued",),
) -> list[tuple[str, list[float]]]:
    """Spans between consecutive marks in `order` (the server's and the client's, one clock),
    median over the jobs; a mark in `aside` that overlaps the others (a handed-off job's
    commit, the face's answer to POST /prompt) is timed from the mark before it, beside them."""
    spans: dict[str, list[float]] = defaultdict(list)
    for job_id, client in marks.items():
        seen = {**per_job.get(job_id, {}), **client}
        present = [s for s in order if s in seen]
        for mark in aside:
            if mark in present and present.index(mark) > 0 and "decided" in seen:
                present.remove(mark)
                before = "decided" if mark == "enqueued" else present[present.index("decided")]
                what = "the commit" if mark == "enqueued" else "the answer"
                spans[f"{before} -> {mark} ({what}, overlapped)"].append(seen[mark] - seen[before])
        for a, b in itertools.pairwise(present):
            spans[f"{a} -> {b}"].append(seen[b] - seen[a])
    kept = [s for s in order if s not in aside]
    names = [f"{a} -> {b}" for a, b in itertools.pairwise(order)]
    names += [f"{a} -> {b}" for a, b in itertools.pairwise(kept) if f"{a} -> {b}" not in names]
    return [(n, spans[n]) for n in names if spans.get(n)] + [
        (n, v) for n, v in spans.items() if n not in names
    ]


# --- main -----------------------------------------------------------------------------------


async def single(args: argparse.Namespace, tmp: Path, rows: list[tuple[str, str]]) -> None:
    stage_log = tmp / "stages.jsonl"
    stage_log.touch()
    real: RealComfy | None = None
    backend = ["--emulator", "1"]
    if args.comfyui is not None:
        real = (args.comfyui.resolve(), args.comfyui_python)
        config = tmp / "real-comfyui.toml"
        config.write_text(
            f"[[backends]]\nname = 'comfyui'\ncomfy_path = {json.dumps(str(real[0]))}\n"
            f"python = {json.dumps(real[1])}\nextra_args = ['--cpu', '--disable-auto-launch']\n"
            "lazy = false\nready_timeout_s = 300\n"
        )
        backend = ["--config", str(config)]
    gc_log = tmp / "gc.log"
    server = comfyrun_process(
        tmp,
        "one",
        ["serve", *backend],
        {"COMFYRUN_BENCH_STAGES": str(stage_log), "COMFYRUN_BENCH_GC": str(gc_log)},
    )
    try:
        await wait_ready(server.url)
        async with emulators(tmp, 1, real) as (emu,), httpx.AsyncClient(timeout=120) as http:
            marks: dict[str, dict[str, float]] = {}
            face_marks: dict[str, dict[str, float]] = {}
            # warm up all three: 10 rounds, and for 4 s at least (the emulators keep their
            # folder listings once the folders are 3 s old: comfy/emulator/scans.py)
            warm_until, rounds = time.perf_counter() + 4.0, 0
            while rounds < 10 or time.perf_counter() < warm_until:
                rounds += 1
                await comfy_face_run(http, emu)
                await v2_run(http, server.url, {})
                await comfy_face_run(http, server.url)
            direct: list[float] = []
            v2: list[float] = []
            face: list[float] = []
            backend_pid = children(server.proc.pid)[0]
            cpu = {"comfyrun": 0.0, "backend": 0.0, "face": 0.0, "face_backend": 0.0}
            for _ in range(max(1, args.jobs // 20)):
                fresh_outputs(tmp)
                direct += [await comfy_face_run(http, emu) for _ in range(20)]
                before = cpu_seconds(server.proc.pid), cpu_seconds(backend_pid)
                v2 += [await v2_run(http, server.url, {}) for _ in range(20)]
                cpu["comfyrun"] += cpu_seconds(server.proc.pid) - before[0]
                cpu["backend"] += cpu_seconds(backend_pid) - before[1]
                before = cpu_seconds(server.proc.pid), cpu_seconds(backend_pid)
                face += [await comfy_face_run(http, server.url) for _ in range(20)]
                cpu["face"] += cpu_seconds(server.proc.pid) - before[0]
                cpu["face_backend"] += cpu_seconds(backend_pid) - before[1]
            base = statistics.median(direct)
            # the two ComfyUIs themselves, each driven directly the same way: comfyrun's runs
            # as its managed backend (its folders, its model paths; comfyrun's socket hears its
            # status messages too), the direct column's as a bare process: a difference of
            # more than the run-to-run noise (~0.5 ms here) is the backends', not comfyrun's
            own = await backend_url(http, server.url)
            alone: dict[str, list[float]] = {"direct": [], "own": []}
            for _ in range(2):
                fresh_outputs(tmp)
                alone["direct"] += [await comfy_face_run(http, emu) for _ in range(20)]
                alone["own"] += [await comfy_face_run(http, own) for _ in range(20)]
            rows += [
                ("direct to ComfyUI (median / p99)", ms(direct)),
                (
                    "  the same steps on comfyrun's own ComfyUI (medians)",
                    f"{statistics.median(alone['own']) * 1000:6.2f} ms, direct's "
                    f"{statistics.median(alone['direct']) * 1000:.2f} ms",
                ),
                ("v2: POST ?wait + GET output", ms(v2)),
                ("  added per job", ms([t - base for t in v2])),
                ("ComfyUI face: /prompt, /ws, /history, /view", ms(face)),
                ("  added per job", ms([t - base for t in face])),
                (
                    "CPU per v2 job: comfyrun / its ComfyUI",
                    cpu_ratio(cpu["comfyrun"], cpu["backend"], len(v2)),
                ),
                (
                    "CPU per face job: comfyrun / its ComfyUI",
                    cpu_ratio(cpu["face"], cpu["face_backend"], len(face)),
                ),
            ]
            # the budget: more jobs, with the server's stage marks on (a log record each, a dozen
            # a job, kept in memory until they go off: the figures above and below are timed
            # with them off)
            switch_stage_marks(server, stage_log, True)
            await wait_ready(server.url)
            traced: list[float] = []
            for _ in range(max(1, args.jobs // 40)):
                fresh_outputs(tmp)
                traced += [await v2_run(http, server.url, marks) for _ in range(20)]
                traced += [await comfy_face_run(http, server.url, face_marks) for _ in range(20)]
            switch_stage_marks(server, stage_log, False)
            await wait_ready(server.url)
            rows.append(("  (jobs timed with the stage marks on, both faces)", ms(traced)))
            per_job = stage_marks(stage_log)
            spans = budget(per_job, marks, ["sent", *STAGES, "answered", "downloaded"])
            face_order = [*FACE_MARKS[:2], *STAGES, *FACE_MARKS[2:]]
            face_order.remove("received")  # (marked by the v2 route only)
            face_spans = budget(per_job, face_marks, face_order, ("enqueued", "prompt answered"))

            loaded: dict[str, str] = {}  # CPU per job under load: comfyrun / its ComfyUI
            paused: dict[str, str] = {}  # comfyrun's garbage collector under load

            async def measured(name: str, one: Callable[[int], Awaitable[Any]]) -> float:
                fresh_outputs(tmp)
                gc_log.write_text("")
                before = cpu_seconds(server.proc.pid), cpu_seconds(backend_pid)
                start = time.perf_counter()
                rate = await drive(args.clients, args.seconds, one)
                jobs = rate * (time.perf_counter() - start)
                loaded[name] = cpu_ratio(
                    cpu_seconds(server.proc.pid) - before[0],
                    cpu_seconds(backend_pid) - before[1],
                    jobs,
                )
                paused[name] = gc_pauses(gc_log)
                return rate

            # the clients on aiohttp first (as the fleet's: the lightest client at hand, so the
            # servers measured get the cores), then on httpx and websockets (~3 ms of CPU a
            # job more, taken from the servers on these two cores)
            async with light_session() as session:
                clients: list[tuple[str, Callable[[str], Callable[[int], Awaitable[Any]]]]] = [
                    ("aiohttp", lambda url: lambda i: light_face_run(session, url)),
                    ("httpx + websockets", lambda url: lambda i: comfy_face_run(http, url)),
                ]
                v2_clients = {
                    "aiohttp": lambda i: light_v2_run(session, server.url),
                    "httpx + websockets": lambda i: v2_run(http, server.url, {}),
                }
                for name, face_one in clients:
                    fresh_outputs(tmp)
                    direct_rate = await drive(args.clients, args.seconds, face_one(emu))
                    v2_rate = await measured("v2", v2_clients[name])
                    face_rate = await measured("face", face_one(server.url))
                    rows += [
                        (
                            f"{args.clients} clients ({name}), one backend: direct",
                            f"{direct_rate:7.1f} jobs/s",
                        ),
                        (
                            "  through comfyrun, v2",
                            f"{v2_rate:7.1f} jobs/s ({100 * v2_rate / direct_rate:.0f} % of direct)",
                        ),
                        ("    CPU per job: comfyrun / its ComfyUI", loaded["v2"]),
                        ("    comfyrun's GC: full collections, longest pause", paused["v2"]),
                        (
                            "  through comfyrun, ComfyUI face",
                            f"{face_rate:7.1f} jobs/s "
                            f"({100 * face_rate / direct_rate:.0f} % of direct)",
                        ),
                        ("    CPU per job: comfyrun / its ComfyUI", loaded["face"]),
                        ("    comfyrun's GC: full collections, longest pause", paused["face"]),
                    ]
    finally:
        server.stop()
    rows.append(("per-stage budget, v2 job (median / p99)", ""))
    rows += [(f"  {name}", ms(values)) for name, values in spans]
    rows.append(("per-stage budget, ComfyUI-face job (median / p99)", ""))
    rows += [(f"  {name}", ms(values)) for name, values in face_spans]


async def fleet(args: argparse.Namespace, tmp: Path, rows: list[tuple[str, str]]) -> None:
    server = comfyrun_process(tmp, "fleet", ["serve", "--emulator", "4"])
    try:
        await wait_ready(server.url)
        async with emulators(tmp, 4) as emus, light_session() as session:
            # each side warmed up (connections made, every backend's first jobs run) and
            # started from empty output folders, as the single-backend columns are
            direct_one = lambda i: light_face_run(session, emus[i % len(emus)])  # noqa: E731
            await drive(32, WARM_UP_S, direct_one)
            fresh_outputs(tmp)
            machine = machine_times()
            direct_rate = await drive(32, args.seconds, direct_one)
            direct_idle = idle_share(machine, machine_times())
            await drive(32, WARM_UP_S, lambda i: light_v2_run(session, server.url))
            fresh_outputs(tmp)
            pid = server.proc.pid
            backends = children(pid)
            before = cpu_seconds(pid), sum(cpu_seconds(p) for p in backends)
            loop_before, machine = thread_cpu_seconds(pid), machine_times()
            start = time.perf_counter()
            rate = await drive(32, args.seconds, lambda i: light_v2_run(session, server.url))
            # (the jobs done: the last ones in flight end after `seconds`)
            took = time.perf_counter() - start
            jobs = rate * took
            loop_share = (thread_cpu_seconds(pid) - loop_before) / took
            idle = idle_share(machine, machine_times())
            after = cpu_seconds(pid), sum(cpu_seconds(p) for p in backends)
            ours, theirs = after[0] - before[0], after[1] - before[1]
            async with session.get(f"{server.url}/api/v2/backends") as r:
                depths = [b["depth"] for b in (await r.json())["backends"]]
            rows += [
                ("fleet, 4 backends, 32 clients: direct", f"{direct_rate:7.1f} jobs/s"),
                (
                    "  through comfyrun serve (SQLite), v2",
                    f"{rate:7.1f} jobs/s ({100 * rate / direct_rate:.0f} % of direct)",
                ),
                ("    CPU per job: comfyrun / its ComfyUIs", cpu_ratio(ours, theirs, jobs)),
                # which bound it: the cores (little idle) or comfyrun's one event loop (its
                # thread short of a whole core, and the cores idle while jobs wait its turns)
                (
                    "    serve's event loop, of a core; the machine idle",
                    f"{100 * loop_share:5.0f} %; {100 * idle:.0f} % (direct: {100 * direct_idle:.0f} %)",
                ),
                # core.pipeline: prompts each backend may hold, set by its prompts' pace
                ("    each backend's depth at the end", ", ".join(map(str, depths))),
            ]
    finally:
        server.stop()


async def enqueues(args: argparse.Namespace, tmp: Path, rows: list[tuple[str, str]]) -> None:
    """Submissions alone: an `api` node on SQLite (no worker), 32 clients on aiohttp (httpx
    costs the client ~3 ms of CPU a request, more than the server on these cores). Beside it,
    the same clients on GET /health: what this machine's HTTP round trip allows at all."""
    server = comfyrun_process(tmp, "enqueue", ["api"])
    try:
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(server.url, connector=connector) as session:

            async def burst(n: int, one: Callable[[], Awaitable[None]]) -> float:
                sem = asyncio.Semaphore(32)

                async def guarded() -> None:
                    async with sem:
                        await one()

                start = time.perf_counter()
                await asyncio.gather(*(guarded() for _ in range(n)))
                return n / (time.perf_counter() - start)

            async def submit() -> None:
                async with session.post("/api/v2/jobs", json={"workflow": workflow()}) as r:
                    assert r.status == 201, await r.text()

            async def health() -> None:
                async with session.get("/health") as r:
                    await r.read()

            await burst(200, submit)
            # three bursts of each, alternating, and their medians: one burst is a few
            # seconds, about as long as this machine's hiccups
            noops: list[float] = []
            rates: list[float] = []
            for _ in range(3):
                noops.append(await burst(args.enqueue_jobs, health))
                rates.append(await burst(args.enqueue_jobs, submit))
        rate, noop = statistics.median(rates), statistics.median(noops)
        spread = f"{min(rates):.0f}-{max(rates):.0f}"
        rows += [
            ("enqueues/s, api node on SQLite, 32 clients", f"{rate:7.1f} (3 bursts: {spread})"),
            ("  GET /health/s, same clients (the HTTP ceiling)", f"{noop:7.1f}"),
        ]
    finally:
        server.stop()


def postgres_pids() -> list[int]:
    """This machine's PostgreSQL server processes (the postmaster and its backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                found.append(int(entry.name))
    return found


def pg_transactions() -> int:
    """Transactions this machine's PostgreSQL committed or rolled back in the bench's database
    so far (a statement in autocommit is one): the counter server processes report to at
    least once a second while busy, and as they exit."""
    import psycopg
    from tests.support.store import pg_dsn

    query = (
        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = current_database()"
    )
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def cpu_of(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each group of processes (those gone since are left out)."""
    spent: dict[str, float] = {}
    for name, pids in groups.items():
        spent[name] = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                spent[name] += cpu_seconds(pid)
    return spent


async def postgres(args: argparse.Namespace, tmp: Path, rows: list[tuple[str, str]]) -> None:
    """`comfyrun api` + 2 `comfyrun worker`s (2 emulators each) on PostgreSQL beside 4
    emulators driven directly, 32 clients each; then where the CPU of a job went, by process
    (api, workers, their emulators, PostgreSQL's server processes): on two shared cores,
    throughput is CPU, and this says whose."""
    import psycopg
    from tests.support.store import drop_schema, new_schema_name, pg_dsn

    schema = new_schema_name()
    db = f"{pg_dsn()}?schema={schema}" if "?" not in pg_dsn() else f"{pg_dsn()}&schema={schema}"
    procs: list[ServerProcess] = []
    try:
        xacts_before = pg_transactions()
        outputs = ["--outputs", (tmp / "pg-outputs").as_uri()]  # shared by every node
        api = comfyrun_process(tmp, "pg-api", ["api", "--db", db, *outputs])
        procs.append(api)
        for i in range(2):
            worker = ["worker", "--db", db, "--emulator", "2", *outputs]
            procs.append(comfyrun_process(tmp, f"pg-w{i}", worker))
        async with emulators(tmp, 4) as emus, light_session() as session:
            direct_one = lambda i: light_face_run(session, emus[i % len(emus)])  # noqa: E731
            await drive(32, WARM_UP_S, direct_one)
            fresh_outputs(tmp)
            direct_rate = await drive(32, args.seconds, direct_one)
            for _ in range(600):
                async with session.get(f"{api.url}/api/v2/stats") as r:
                    if await r.json():
                        break
            ours = lambda i: light_v2_run(session, api.url)  # noqa: E731
            await drive(32, WARM_UP_S, ours)
            fresh_outputs(tmp)
            workers = [p.proc.pid for p in procs[1:]]
            groups = {
                "api": [api.proc.pid],
                "workers": workers,
                "their emulators": [c for w in workers for c in children(w)],
                "PostgreSQL": postgres_pids(),
            }
            before = cpu_of(groups)
            start = time.perf_counter()
            rate = await drive(32, args.seconds, ours)
            jobs = rate * (time.perf_counter() - start)  # (the last jobs end after `seconds`)
            after = cpu_of(groups)
        for proc in procs:  # a server process leaving reports its last transactions
            proc.stop()
        await asyncio.sleep(0.5)
        xacts = pg_transactions() - xacts_before
        with psycopg.connect(pg_dsn()) as conn:
            ran = conn.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()
        jobs_in_all = ran[0] if ran else 0
        spent = "  ".join(f"{k} {(after[k] - before[k]) / jobs * 1000:.2f}" for k in groups)
        total = sum(after[k] - before[k] for k in groups) / jobs * 1000
        # comfyrun's CPU against its emulators' (code no build of comfyrun changes), in the
        # same seconds: steadier than either figure alone as the machine's speed moves, though
        # still ~10 % between runs (bench/instructions.py is the steady measure)
        ours_cpu = sum(after[k] - before[k] for k in ("api", "workers"))
        relative = ours_cpu / max(1e-9, after["their emulators"] - before["their emulators"])
        rows += [
            ("PostgreSQL set-up, 4 backends, 32 clients: direct", f"{direct_rate:7.1f} jobs/s"),
            (
                "  through api + 2 workers on PostgreSQL, v2",
                f"{rate:7.1f} jobs/s ({100 * rate / direct_rate:.0f} % of direct)",
            ),
            ("    CPU per job, ms", f"{spent}  (all {total:.2f})"),
            ("    CPU of api + workers / of their emulators", f"{relative:7.2f}x"),
            (
                "    PostgreSQL transactions a job, NOTIFYs relayed included",
                f"{xacts / max(1, jobs_in_all):7.2f} ({jobs_in_all} jobs, warm-up included)",
            ),
        ]
    finally:
        for proc in procs:
            proc.stop()
        drop_schema(schema)


async def idle_sockets(args: argparse.Namespace, tmp: Path, rows: list[tuple[str, str]]) -> None:
    """--idle-sockets N: the ComfyUI face's throughput (`args.clients` clients, one backend)
    with N more `/ws` sockets open and only listening (ComfyUI editors open in browser tabs),
    through `serve` and on the emulator directly, each with its own N sockets: every prompt
    makes a `status` broadcast to every socket."""
    server = comfyrun_process(tmp, "idle", ["serve", "--emulator", "1"])
    try:
        await wait_ready(server.url)
        async with emulators(tmp, 1) as (emu,), light_session() as session:
            rates = {}
            for name, url in (("direct", emu), ("comfyrun", server.url)):
                listening = [
                    await session.ws_connect(f"{url}/ws?clientId={uuid.uuid4().hex}")
                    for _ in range(args.idle_sockets)
                ]
                try:
                    one = lambda i, url=url: light_face_run(session, url)  # noqa: E731
                    await drive(args.clients, WARM_UP_S, one)
                    fresh_outputs(tmp)
                    rates[name] = await drive(args.clients, args.seconds, one)
                finally:
                    for ws in listening:
                        await ws.close()
        rows += [
            (
                f"ComfyUI face, {args.idle_sockets} idle /ws open, {args.clients} clients: direct",
                f"{rates['direct']:7.1f} jobs/s",
            ),
            (
                "  through comfyrun",
                f"{rates['comfyrun']:7.1f} jobs/s "
                f"({100 * rates['comfyrun'] / rates['direct']:.0f} % of direct)",
            ),
        ]
    finally:
        server.stop()


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="comfyrun-hot-"))
    pad_workflows(args.workflow_kb)
    rows: list[tuple[str, str]] = []
    await single(args, tmp, rows)
    if args.fleet:
        await fleet(args, tmp, rows)
        await enqueues(args, tmp, rows)
    if args.postgres:
        await postgres(args, tmp, rows)
    if args.idle_sockets:
        await idle_sockets(args, tmp, rows)
    width = max(len(k) for k, _ in rows)
    against = f"a real ComfyUI ({args.comfyui})" if args.comfyui else "the emulator"
    print(
        f"comfyrun hot path ({os.cpu_count()} CPUs, {args.jobs} sequential jobs per column, "
        f"workflows of {len(json.dumps(workflow())) / 1000:.1f} KB, "
        f"against {against})"
    )
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="sequential jobs per column")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput column")
    parser.add_argument("--fleet", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--enqueue-jobs", type=int, default=5000)
    parser.add_argument(
        "--idle-sockets", type=int, default=0, help="also the face with N listening /ws open"
    )
    parser.add_argument(
        "--workflow-kb", type=float, default=0.0, help="KB of unconnected nodes in each workflow"
    )
    parser.add_argument("--comfyui", type=Path, help="a real ComfyUI's folder (see above)")
    parser.add_argument("--comfyui-python", default=sys.executable, help="the Python it runs on")
    asyncio.run(main(parser.parse_args()))
