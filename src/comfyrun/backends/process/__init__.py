"""Managed ComfyUI processes: run one, wait until it answers, keep it alive, stop it cleanly.

Theory of operation
-------------------
A `ManagedProcess` supervises one ComfyUI described by a `ManagedSpec`: a ComfyUI folder whose
main.py it runs with a given Python, or a full command line. It starts the child lazily (the first
`ensure_started()`; concurrent callers share that one start) on a free 127.0.0.1 port it picks,
in a session of its own so that signals reach the child's own children too, with stdout and
stderr going straight into one log file per backend. The child is ready once GET /system_stats
answers (a bounded poll: a process offers no event to wait for) and, if the spec has one, a
warm-up prompt has run; the poll stops at once if the child exits.

    stopped ─▶ starting ─▶ ready ⇄ busy
                  │           │      │ exits, or stops answering
                  │           ▼      ▼
                  │         crashed ─▶ restarting ─▶ starting
                  ▼           │ restart budget spent
                error ◀───────┘              stop() from anywhere ─▶ stopped

Rules:
- A broken installation (no folder, no main.py, no Python) or a failure on a fresh start goes to
  `error` with a message that says what to fix, and stays there until `restart()`.
- A child that exits, or stops answering health probes, while it was wanted is `crashed` and is
  restarted after a jittered exponential backoff, at most `max_restarts` times per
  `restart_window_s`; the pool learns of the crash through `on_state_change` and retries the job.
- A child that exits during start-up because its port was taken meanwhile is started again on
  another port; that is not a crash.
- `stop()` sends SIGTERM to the child's process group, SIGKILL after `stop_grace_s`, and returns
  only when no process of the group is left.
- On Linux the child is also tied to comfyrun's life (PR_SET_PDEATHSIG, see `groups.py`): a
  comfyrun killed with SIGKILL takes its ComfyUIs with it.
- Idle stop: a `ready` process with no activity for `idle_stop_s` is stopped; the next
  `ensure_started()` starts it again.

Modules: `spec` (what to run: command line, folders, config table), `states` (the state table and
restart budget, pure), `readiness` (the start-up poll and warm-up), `groups` (process-group
signals), `child` (one child: spawned, brought up on a port, its group terminated),
`supervisor` (`ManagedProcess`). The log file is `comfyrun.backends.logs`, the port
picker `comfyrun.backends.ports`.
"""

from comfyrun.backends.process.groups import group_alive, signal_group
from comfyrun.backends.process.spec import (
    CONFIG_KEYS,
    HOST,
    ComfyFolders,
    ManagedSpec,
    installation_problem,
    resolve_folders,
)
from comfyrun.backends.process.states import TRANSITIONS, UP, ProcessState, restart_delay
from comfyrun.backends.process.supervisor import ManagedProcess, ProcessInfo, StateCallback

__all__ = [
    "CONFIG_KEYS",
    "HOST",
    "TRANSITIONS",
    "UP",
    "ComfyFolders",
    "ManagedProcess",
    "ManagedSpec",
    "ProcessInfo",
    "ProcessState",
    "StateCallback",
    "group_alive",
    "installation_problem",
    "resolve_folders",
    "restart_delay",
    "signal_group",
]
