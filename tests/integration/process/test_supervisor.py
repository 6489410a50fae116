"""The supervisor against a real child process (the fake ComfyUI in tests/support)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from tests.integration.process.conftest import SpecFactory
from tests.support.fake_comfy import pid_running

from comfyrun.backends.ports import pick_free_port
from comfyrun.backends.process import TRANSITIONS, ManagedProcess, ProcessState
from comfyrun.errors import BackendError

S = ProcessState


def state(process: ManagedProcess) -> ProcessState:
    """The current state (a call, so that type checkers do not narrow it between awaits)."""
    return process.state


def track(process: ManagedProcess) -> list[ProcessState]:
    seen: list[ProcessState] = []
    process.on_state_change(seen.append)
    return seen


async def wait_for_state(process: ManagedProcess, state: ProcessState, timeout: float = 60) -> None:
    changed = asyncio.Event()
    process.on_state_change(lambda _s: changed.set())
    async with asyncio.timeout(timeout):
        while process.state is not state:
            changed.clear()
            await changed.wait()


async def wait_for_new_process(process: ManagedProcess, old_pid: int, timeout: float = 60) -> str:
    """The URL once a process other than `old_pid` is up (after a crash and restart)."""
    changed = asyncio.Event()
    process.on_state_change(lambda _s: changed.set())
    async with asyncio.timeout(timeout):
        while not (process.state is S.READY and process.pid != old_pid):
            changed.clear()
            await changed.wait()
    assert process.url is not None
    return process.url


async def wait_gone(pid: int, timeout: float = 10) -> bool:
    async with asyncio.timeout(timeout):
        while pid_running(pid):  # noqa: ASYNC110 - another process's exit offers no event
            await asyncio.sleep(0.05)
    return True


async def stats(url: str) -> dict[str, object]:
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"{url}/system_stats")
        response.raise_for_status()
        body: dict[str, object] = response.json()["system"]
        return body


def legal(seen: list[ProcessState], start: ProcessState = S.STOPPED) -> bool:
    pairs = zip([start, *seen], seen, strict=False)
    return all(pair in TRANSITIONS for pair in pairs)


async def test_lazy_start_on_first_call_with_args_env_and_folders(
    make_spec: SpecFactory, processes: list[ManagedProcess], comfy_folder: Path
) -> None:
    spec = make_spec(
        extra_args=("--extra-model-paths-config", "extra.yaml"),
        env={"CUDA_VISIBLE_DEVICES": "1"},
    )
    process = ManagedProcess(spec)
    processes.append(process)
    seen = track(process)
    assert process.state is S.STOPPED and process.url is None and process.pid is None

    url = await process.ensure_started()

    assert state(process) is S.READY and process.url == url
    assert url.startswith("http://127.0.0.1:")
    system = await stats(url)
    argv = system["argv"]
    assert isinstance(argv, list)
    assert argv[0] == str(comfy_folder / "main.py")
    assert argv[1:3] == ["--extra-model-paths-config", "extra.yaml"]
    assert argv[-4:] == ["--listen", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    assert system["cuda_visible_devices"] == "1"
    assert system["pid"] == process.pid
    assert system["cwd"] == str(comfy_folder)
    assert process.input_dir == comfy_folder / "input" and process.input_dir.is_dir()
    assert process.output_dir == comfy_folder / "output" and process.output_dir.is_dir()
    assert process.temp_dir == comfy_folder / "temp"
    assert seen == [S.STARTING, S.READY]
    assert any("To see the GUI go to" in line for line in process.log_tail(20))


async def test_concurrent_callers_share_one_start(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    process = ManagedProcess(make_spec())
    processes.append(process)
    urls = await asyncio.gather(*(process.ensure_started() for _ in range(5)))
    assert len(set(urls)) == 1
    starts = [line for line in process.log_tail(200) if "[comfyrun] starting:" in line]
    assert len(starts) == 1


async def test_stop_terminates_the_whole_process_group(
    make_spec: SpecFactory, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    process = ManagedProcess(make_spec(env={"FAKE_COMFY_CHILD_PIDFILE": str(pidfile)}))
    processes.append(process)
    await process.ensure_started()
    comfy_pid, grandchild_pid = map(int, pidfile.read_text().split())
    assert comfy_pid == process.pid
    assert pid_running(comfy_pid) and pid_running(grandchild_pid)

    await process.stop()

    assert process.state is S.STOPPED and process.pid is None and process.url is None
    assert not pid_running(comfy_pid)
    assert not pid_running(grandchild_pid)


async def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    process = ManagedProcess(make_spec(env={"FAKE_COMFY_IGNORE_TERM": "1"}, stop_grace_s=0.5))
    processes.append(process)
    await process.ensure_started()
    pid = process.pid
    assert pid is not None
    await process.stop()
    assert not pid_running(pid)
    assert any("exit code -9" in line for line in process.log_tail(5))


async def test_missing_folder_goes_to_error_saying_what_to_fix(
    make_spec: SpecFactory, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    process = ManagedProcess(make_spec(comfy_path=tmp_path / "nowhere"))
    processes.append(process)
    with pytest.raises(BackendError, match=r"does not exist.*contains main\.py"):
        await process.ensure_started()
    assert process.state is S.ERROR
    assert process.last_error is not None and "nowhere" in process.last_error
    # it stays in error (no retry loop) and says the same thing to the next caller
    with pytest.raises(BackendError, match="does not exist"):
        await process.ensure_started()


async def test_folder_without_main_py_and_missing_python(
    make_spec: SpecFactory, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    no_main = ManagedProcess(make_spec(comfy_path=empty, name="a"))
    no_python = ManagedProcess(make_spec(python=str(tmp_path / "bin" / "python3"), name="b"))
    not_on_path = ManagedProcess(make_spec(python="python-that-is-not-there", name="c"))
    processes.extend([no_main, no_python, not_on_path])
    with pytest.raises(BackendError, match=r"has no main\.py"):
        await no_main.ensure_started()
    with pytest.raises(BackendError, match=r"Python interpreter .* was not found"):
        await no_python.ensure_started()
    with pytest.raises(BackendError, match="python-that-is-not-there"):
        await not_on_path.ensure_started()
    assert {p.state for p in (no_main, no_python, not_on_path)} == {S.ERROR}


async def test_start_up_crash_goes_to_error_with_the_log_tail(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    process = ManagedProcess(make_spec(env={"FAKE_COMFY_CRASH_AT_START": "1"}))
    processes.append(process)
    seen = track(process)
    with pytest.raises(BackendError) as raised:
        await process.ensure_started()
    assert "exited with code 1 during start-up" in raised.value.message
    assert "No module named 'torch'" in raised.value.message
    assert "No module named 'torch'" in "\n".join(raised.value.details["log_tail"])
    assert seen == [S.STARTING, S.ERROR]
    assert process.pid is None


@pytest.mark.slow
async def test_ready_timeout_goes_to_error_and_leaves_nothing_running(
    make_spec: SpecFactory, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    spec = make_spec(
        env={"FAKE_COMFY_START_DELAY_S": "60", "FAKE_COMFY_CHILD_PIDFILE": str(pidfile)},
        ready_timeout_s=5.0,
        stop_grace_s=1.0,
    )
    process = ManagedProcess(spec)
    processes.append(process)
    with pytest.raises(BackendError, match=r"did not answer GET /system_stats .* within 5s"):
        await process.ensure_started()
    assert process.state is S.ERROR
    comfy_pid, grandchild_pid = map(int, pidfile.read_text().split())
    assert not pid_running(comfy_pid) and not pid_running(grandchild_pid)


async def test_a_busy_port_is_avoided(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        offered: list[int] = []

        def picker() -> int:
            # the first pick races with another program that took the port meanwhile
            port = busy if not offered else pick_free_port()
            offered.append(port)
            return port

        process = ManagedProcess(make_spec(), port_picker=picker)
        processes.append(process)
        url = await process.ensure_started()

    assert offered[0] == busy and len(offered) == 2
    assert url == f"http://127.0.0.1:{offered[1]}"
    assert process.state is S.READY and process.restarts == 0
    assert "address already in use" in "\n".join(process.log_tail(200)).lower()


async def test_a_fixed_port_another_comfyui_answers_on_is_an_error_not_adopted(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    """(The other server answered GET /system_stats, so the backend was `ready` on a ComfyUI
    comfyrun did not start, with other folders, while its own child exited and was restarted
    in a loop.)"""
    other = ManagedProcess(make_spec(name="other"))
    processes.append(other)
    other_url = await other.ensure_started()
    port = int(other_url.rsplit(":", 1)[1])
    fixed = ManagedProcess(make_spec(name="fixed", port=port))
    processes.append(fixed)
    with pytest.raises(BackendError, match=rf"port {port} .*in use"):
        await fixed.ensure_started()
    assert fixed.state is S.ERROR and fixed.url is None and fixed.pid is None
    assert other.state is S.READY


async def test_kill_9_is_restarted_with_a_new_process(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    process = ManagedProcess(make_spec())
    processes.append(process)
    seen = track(process)
    await process.ensure_started()
    first = process.pid
    assert first is not None

    os.kill(first, signal.SIGKILL)
    await wait_for_state(process, S.CRASHED)
    assert process.last_error is not None and "exited unexpectedly" in process.last_error
    # a caller arriving during the restart waits for it instead of failing
    url = await process.ensure_started()

    assert process.state is S.READY and process.pid not in (None, first)
    assert (await stats(url))["pid"] == process.pid
    assert process.restarts == 1
    info = process.info(tail=50)
    assert (info.state, info.pid, info.url, info.restarts) == (S.READY, process.pid, url, 1)
    assert any("exited unexpectedly with code -9" in line for line in info.log_tail)
    assert seen == [S.STARTING, S.READY, S.CRASHED, S.RESTARTING, S.STARTING, S.READY]
    assert legal(seen)


async def test_a_crash_loop_ends_in_error_once_the_budget_is_spent(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    process = ManagedProcess(make_spec(max_restarts=1))
    processes.append(process)
    url = await process.ensure_started()
    first = process.pid
    assert first is not None
    async with httpx.AsyncClient(trust_env=False) as http:
        with pytest.raises(httpx.HTTPError):
            await http.post(f"{url}/fake/exit")
    url = await wait_for_new_process(process, first)  # the one allowed restart
    async with httpx.AsyncClient(trust_env=False) as http:
        with pytest.raises(httpx.HTTPError):
            await http.post(f"{url}/fake/exit")
    await wait_for_state(process, S.ERROR)
    assert process.last_error is not None and "given up" in process.last_error
    with pytest.raises(BackendError, match="given up"):
        await process.ensure_started()
    # an explicit restart forgets the past and starts again
    await process.restart()
    assert process.state is S.READY


@pytest.mark.slow
async def test_a_process_that_stops_answering_is_restarted(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    spec = make_spec(
        health_interval_s=0.3, health_timeout_s=2.0, health_failures=2, stop_grace_s=1.0
    )
    process = ManagedProcess(spec)
    processes.append(process)
    seen = track(process)
    url = await process.ensure_started()
    first = process.pid
    assert first is not None
    async with httpx.AsyncClient(trust_env=False) as http:
        await http.post(f"{url}/fake/hang")
    await wait_for_state(process, S.CRASHED)
    assert process.last_error is not None and "stopped answering" in process.last_error
    await process.ensure_started()
    assert process.pid != first and not pid_running(first)
    assert legal(seen)


async def test_busy_ready_and_idle_stop_then_lazy_start_again(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    process = ManagedProcess(make_spec(idle_stop_s=0.5))
    processes.append(process)
    seen = track(process)
    await process.ensure_started()
    process.mark_busy(True)
    assert process.state is S.BUSY
    await asyncio.sleep(0.8)  # busy: the idle clock does not run
    assert process.state is S.BUSY
    process.mark_busy(False)
    pid = process.pid
    assert pid is not None
    await wait_for_state(process, S.STOPPED, timeout=30)
    assert await wait_gone(pid)

    await process.ensure_started()
    assert state(process) is S.READY and process.pid != pid
    assert seen == [S.STARTING, S.READY, S.BUSY, S.READY, S.STOPPED, S.STARTING, S.READY]


async def test_stop_while_starting_fails_the_waiters_and_leaves_nothing(
    make_spec: SpecFactory, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    spec = make_spec(
        env={"FAKE_COMFY_START_DELAY_S": "60", "FAKE_COMFY_CHILD_PIDFILE": str(pidfile)}
    )
    process = ManagedProcess(spec)
    processes.append(process)
    waiter = asyncio.create_task(process.ensure_started())
    async with asyncio.timeout(30):
        while not pidfile.exists():  # noqa: ASYNC110 - the child writes it; no event to wait on
            await asyncio.sleep(0.05)
    await process.stop()
    with pytest.raises(BackendError, match="stopped while it was starting"):
        await waiter
    assert process.state is S.STOPPED
    comfy_pid, grandchild_pid = map(int, pidfile.read_text().split())
    assert not pid_running(comfy_pid) and not pid_running(grandchild_pid)


async def test_warm_up_prompt_runs_before_ready_and_its_failure_is_an_error(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    good = ManagedProcess(
        make_spec(name="good", warmup_prompt={"1": {"class_type": "EmptyImage", "inputs": {}}})
    )
    bad = ManagedProcess(
        make_spec(name="bad", warmup_prompt={"1": {"class_type": "Fail", "inputs": {}}})
    )
    processes.extend([good, bad])
    await good.ensure_started()
    assert good.state is S.READY
    with pytest.raises(BackendError, match="warm-up prompt failed"):
        await bad.ensure_started()
    assert bad.state is S.ERROR and bad.pid is None


async def test_command_backend_gets_folders_it_did_not_name(
    make_spec: SpecFactory, processes: list[ManagedProcess], tmp_path: Path, comfy_folder: Path
) -> None:
    out = tmp_path / "out"
    spec = make_spec(
        comfy_path=None,
        command=(sys.executable, str(comfy_folder / "main.py"), "--output-directory", str(out)),
        cwd=tmp_path,
    )
    process = ManagedProcess(spec)
    processes.append(process)
    url = await process.ensure_started()
    argv = (await stats(url))["argv"]
    assert isinstance(argv, list)
    assert process.output_dir == out
    assert process.input_dir == comfy_folder / "input"  # ComfyUI's default: beside main.py
    assert "--input-directory" not in argv


async def test_job_inputs_live_in_the_input_folder_and_are_removed(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    process = ManagedProcess(make_spec())
    processes.append(process)
    folder = process.job_input_dir("job1")
    (folder / "a.png").write_bytes(b"png")
    assert folder.parent.parent == process.input_dir
    assert process.input_name("job1", "a.png") == "comfyrun/job1/a.png"
    assert (process.input_dir / process.input_name("job1", "a.png")).read_bytes() == b"png"
    process.remove_job_inputs("job1")
    assert not folder.exists()


async def test_an_output_folder_that_cannot_be_made_is_an_error_not_a_hang(
    make_spec: SpecFactory, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    process = ManagedProcess(make_spec(extra_args=("--output-directory", str(blocker / "out"))))
    processes.append(process)
    with pytest.raises(BackendError, match="could not be started"):
        await process.ensure_started()
    assert state(process) is S.ERROR and process.pid is None


async def test_the_folders_own_venv_runs_comfyui_unless_python_is_given(
    make_spec: SpecFactory, processes: list[ManagedProcess], comfy_folder: Path
) -> None:
    venv_python = comfy_folder / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    process = ManagedProcess(make_spec(python=None))
    processes.append(process)
    await process.ensure_started()
    started = [line for line in process.log_tail(50) if "[comfyrun] starting:" in line]
    assert f"starting: {venv_python} {comfy_folder / 'main.py'}" in started[-1]
    assert make_spec(python=sys.executable).base_argv()[0] == sys.executable


async def test_a_stop_right_after_a_crash_is_not_undone_by_the_restart(
    make_spec: SpecFactory, processes: list[ManagedProcess]
) -> None:
    process = ManagedProcess(make_spec(restart_backoff_s=0.05))
    processes.append(process)
    seen = track(process)
    await process.ensure_started()
    pid = process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0)  # whichever runs first, the crash watcher or the stop, must not matter
    await process.stop()
    await asyncio.sleep(1.0)  # well past the restart backoff
    assert state(process) is S.STOPPED and process.pid is None
    assert legal(seen)
