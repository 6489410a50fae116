"""A managed ComfyUI's process group: signalling all of it, knowing when it is gone, and tying
it to comfyrun's life.

The child runs in a session of its own, so one signal to its group reaches its own children too.
On Linux it is also started through a two-line launcher that asks the kernel to SIGKILL it when
comfyrun dies (prctl PR_SET_PDEATHSIG) and then execs ComfyUI, so that even a comfyrun killed
with SIGKILL leaves no ComfyUI holding a GPU. The launcher runs after the fork, in the child, so
none of the hazards of `preexec_fn` in a threaded parent apply.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

#: Runs as `python -c LAUNCHER <parent pid> <argv...>`: die with the parent, then become argv.
LAUNCHER = (
    "import ctypes,os,signal,sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('comfyrun exited before ComfyUI started')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def tied_to_parent(argv: Sequence[str], python: str) -> list[str]:
    """`argv` run so that it dies with this process (Linux); unchanged elsewhere."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [python, "-c", LAUNCHER, str(os.getpid()), *argv]


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to every process of the group; a group that is gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running (zombies do not count: they hold
    nothing and, when their parent was the child we killed, nobody may ever reap them)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


__all__ = ["LAUNCHER", "group_alive", "signal_group", "tied_to_parent"]
