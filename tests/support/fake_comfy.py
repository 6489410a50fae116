"""A tiny stand-in for ComfyUI's main.py, for the process supervisor's tests.

It accepts ComfyUI's flags, answers GET /system_stats, runs "prompts" instantly (POST /prompt,
GET /history/{id}) and misbehaves on request. Run it as a script, or copy it into a folder as
main.py (`make_comfy_folder`). Behaviour switches are environment variables, so they reach it
through any command line:

    FAKE_COMFY_START_DELAY_S   sleep this long before binding the port
    FAKE_COMFY_CRASH_AT_START  print an import error and exit 1 before binding
    FAKE_COMFY_CHILD_PIDFILE   spawn a sleeping grandchild; write "<own pid> <child pid>" here
    FAKE_COMFY_IGNORE_TERM     ignore SIGTERM (only SIGKILL stops it)

and endpoints: POST /fake/exit (exit at once, code 3), POST /fake/hang (stop answering
/system_stats). A prompt whose first node's class_type is "Fail" fails with a history error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

THIS_FILE = Path(__file__).resolve()


def make_comfy_folder(folder: Path) -> Path:
    """A folder shaped like a ComfyUI checkout whose main.py is this fake."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(THIS_FILE, folder / "main.py")
    return folder


def pid_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it is dead, only not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def _main() -> None:
    # first, before the slow imports, so that tests see the grandchild early
    ignore_term = bool(os.environ.get("FAKE_COMFY_IGNORE_TERM"))
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pidfile = os.environ.get("FAKE_COMFY_CHILD_PIDFILE")
    if pidfile:
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(pidfile).write_text(f"{os.getpid()} {grandchild.pid}")

    from aiohttp import web

    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--input-directory")
    parser.add_argument("--output-directory")
    parser.add_argument("--temp-directory")
    args, _unknown = parser.parse_known_args()

    print("Starting server (fake ComfyUI)", flush=True)
    time.sleep(float(os.environ.get("FAKE_COMFY_START_DELAY_S", "0")))
    if os.environ.get("FAKE_COMFY_CRASH_AT_START"):
        print("Traceback (most recent call last):", flush=True)
        print("ModuleNotFoundError: No module named 'torch'", flush=True)
        sys.exit(1)

    history: dict[str, Any] = {}
    hang = asyncio.Event()

    async def system_stats(request: web.Request) -> web.Response:
        if hang.is_set():
            await asyncio.sleep(3600)
        return web.json_response(
            {
                "system": {
                    "argv": sys.argv,
                    "cwd": os.getcwd(),
                    "pid": os.getpid(),
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                },
                "devices": [],
            }
        )

    async def prompt(request: web.Request) -> web.Response:
        body = await request.json()
        nodes = body.get("prompt") or {}
        if not nodes:
            return web.json_response(
                {"error": {"type": "no_prompt", "message": "No prompt provided"}}, status=400
            )
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        first = next(iter(nodes.values()))
        failed = isinstance(first, dict) and first.get("class_type") == "Fail"
        history[prompt_id] = {
            "prompt": [0, prompt_id, nodes, {}, []],
            "outputs": {},
            "status": {
                "status_str": "error" if failed else "success",
                "completed": not failed,
                "messages": [["execution_error", {"exception_message": "node Fail failed"}]]
                if failed
                else [],
            },
        }
        return web.json_response({"prompt_id": prompt_id, "number": 0, "node_errors": {}})

    async def get_history(request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry else {})

    async def fake_exit(request: web.Request) -> web.Response:
        os._exit(3)

    async def fake_hang(request: web.Request) -> web.Response:
        hang.set()
        return web.json_response({"hanging": True})

    app = web.Application()
    app.router.add_get("/system_stats", system_stats)
    app.router.add_post("/prompt", prompt)
    app.router.add_get("/history/{prompt_id}", get_history)
    app.router.add_post("/fake/exit", fake_exit)
    app.router.add_post("/fake/hang", fake_hang)
    dirs = {"input": args.input_directory, "output": args.output_directory}
    print(f"fake ComfyUI folders: {json.dumps(dirs)}", flush=True)
    print(f"To see the GUI go to: http://{args.listen}:{args.port}", flush=True)
    web.run_app(app, host=args.listen, port=args.port, print=None, handle_signals=not ignore_term)


if __name__ == "__main__":
    _main()
