"""ManagedSpec: command lines, folders, config tables, restart budget. No processes, no files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from comfyrun.backends.ports import says_port_in_use
from comfyrun.backends.process import (
    TRANSITIONS,
    UP,
    ManagedSpec,
    ProcessState,
    restart_delay,
)
from comfyrun.errors import InvalidRequest

LOGS = Path("/var/log/comfyrun")
COMFY = Path("/opt/ComfyUI")


def spec(**overrides: object) -> ManagedSpec:
    fields: dict[str, object] = {"name": "gpu0", "log_dir": LOGS, "comfy_path": COMFY}
    fields.update(overrides)
    return ManagedSpec(**fields)  # type: ignore[arg-type]


def test_folder_backend_runs_main_py_with_its_python_on_the_chosen_port() -> None:
    s = spec(python="/venv/bin/python", extra_args=("--lowvram",))
    assert s.argv(8190) == [
        "/venv/bin/python",
        "/opt/ComfyUI/main.py",
        "--lowvram",
        "--listen",
        "127.0.0.1",
        "--port",
        "8190",
    ]
    assert s.workdir == COMFY
    assert s.log_file == LOGS / "gpu0.log"


def test_folder_backend_uses_the_folders_inside_the_checkout() -> None:
    folders = spec().folders()
    assert (folders.input_dir, folders.output_dir, folders.temp_dir) == (
        COMFY / "input",
        COMFY / "output",
        COMFY / "temp",
    )
    assert folders.flags == ()


def test_directory_flags_win_and_temp_follows_comfyuis_rule() -> None:
    s = spec(
        extra_args=(
            "--output-directory",
            "/data/out",
            "--input-directory=/data/in",
            "--temp-directory",
            "/scratch",
        )
    )
    folders = s.folders()
    assert folders.output_dir == Path("/data/out")
    assert folders.input_dir == Path("/data/in")
    assert folders.temp_dir == Path("/scratch/temp")  # ComfyUI appends "temp" to the flag
    assert folders.flags == ()


def test_relative_flags_are_taken_from_the_working_directory() -> None:
    s = spec(cwd=Path("/work"), extra_args=("--output-directory", "out"))
    assert s.folders().output_dir == Path("/work/out")


def test_base_directory_flag_moves_the_default_folders() -> None:
    s = spec(extra_args=("--base-directory", "/models-and-io"))
    assert s.folders().input_dir == Path("/models-and-io/input")


def test_command_without_main_py_gets_folders_chosen_by_comfyrun() -> None:
    s = spec(comfy_path=None, command=("comfy", "launch", "--"))
    folders = s.folders()
    assert folders.input_dir == LOGS / "gpu0" / "input"
    assert folders.output_dir == LOGS / "gpu0" / "output"
    assert folders.temp_dir == LOGS / "gpu0" / "temp"
    argv = s.argv(9000)
    assert argv[:3] == ["comfy", "launch", "--"]
    assert argv[argv.index("--temp-directory") + 1] == str(LOGS / "gpu0")
    assert argv[argv.index("--output-directory") + 1] == str(LOGS / "gpu0" / "output")
    assert argv[-2:] == ["--port", "9000"]


def test_command_naming_main_py_uses_that_checkout() -> None:
    s = spec(comfy_path=None, command=("/py", "/srv/ComfyUI/main.py"))
    assert s.folders().output_dir == Path("/srv/ComfyUI/output")


@pytest.mark.parametrize(
    "overrides",
    [
        {"comfy_path": None},
        {"command": ("x",)},
        {"comfy_path": None, "command": ()},
        {"name": ""},
        {"name": "a/b"},
        {"ready_timeout_s": 0},
    ],
)
def test_invalid_specs_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        spec(**overrides)


def test_from_config_reads_a_backends_table() -> None:
    s = ManagedSpec.from_config(
        {
            "path": "ComfyUI",
            "python": "venv/bin/python",
            "args": "--extra-model-paths-config extra.yaml",
            "env": {"CUDA_VISIBLE_DEVICES": 1},
            "start": "eager",
            "idle_stop_minutes": 5,
            "ready_timeout_s": 30,
            "max_restarts": 2,
            "warmup_prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}},
        },
        log_dir=LOGS,
        base_dir=Path("/etc/comfyrun"),
    )
    assert s.name == "ComfyUI"
    assert s.comfy_path == Path("/etc/comfyrun/ComfyUI")
    assert s.python == "/etc/comfyrun/venv/bin/python"
    assert s.extra_args == ("--extra-model-paths-config", "extra.yaml")
    assert s.env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert s.lazy is False
    assert s.idle_stop_s == 300
    assert s.ready_timeout_s == 30.0 and s.max_restarts == 2
    assert s.warmup_prompt is not None and "1" in s.warmup_prompt
    assert s.log_dir == LOGS


def test_from_config_defaults_and_python_by_name() -> None:
    s = ManagedSpec.from_config(
        {"name": "x", "command": ["comfy", "launch"], "python": "python3"}, log_dir=LOGS
    )
    assert s.command == ("comfy", "launch") and s.python == "python3"
    assert s.lazy is True and s.idle_stop_s is None
    plain = ManagedSpec.from_config({"path": "/nonexistent/c"}, log_dir=LOGS)
    assert plain.python is None  # discovered at start (tests/unit/process/test_interpreter.py)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"path": "/c", "gpu": 1}, "unknown keys"),
        ({"command": "comfy"}, "needs a name"),
        ({"path": "/c", "start": "soon"}, "lazy' or 'eager"),
        ({"path": "/c", "env": ["A=1"]}, "env must be a table"),
        ({"path": "/c", "args": 3}, "list of strings"),
        ({"path": "/c", "command": "x"}, "not both"),
    ],
)
def test_from_config_refuses_bad_tables_clearly(table: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        ManagedSpec.from_config(table, log_dir=LOGS)


def test_restart_budget_counts_only_recent_crashes() -> None:
    s = spec(max_restarts=2, restart_window_s=60, restart_backoff_s=1.0)
    rng = random.Random(1)
    assert restart_delay([100.0], 100.0, s, rng) is not None
    assert restart_delay([99.0, 100.0], 100.0, s, rng) is not None
    assert restart_delay([98.0, 99.0, 100.0], 100.0, s, rng) is None
    # old crashes fall out of the window
    assert restart_delay([10.0, 20.0, 100.0], 100.0, s, rng) is not None


def test_restart_backoff_grows_with_recent_crashes() -> None:
    s = spec(max_restarts=10, restart_backoff_s=1.0)
    first = restart_delay([0.0], 0.0, s, random.Random(0))
    fourth = restart_delay([0.0] * 4, 0.0, s, random.Random(0))
    assert first is not None and fourth is not None
    assert 0.5 <= first <= 1.0
    assert 4.0 <= fourth <= 8.0


def test_transition_table_reaches_every_state_and_stop_is_always_possible() -> None:
    targets = {b for _, b in TRANSITIONS}
    assert targets == set(ProcessState)
    for state in ProcessState:
        if state is not ProcessState.STOPPED:
            assert (state, ProcessState.STOPPED) in TRANSITIONS
    assert frozenset({ProcessState.READY, ProcessState.BUSY}) == UP


@pytest.mark.parametrize(
    "line",
    [
        "OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8188): "
        "address already in use",
        "OSError: [Errno 48] Address already in use",
        "Only one usage of each socket address (protocol/network address/port) is normally "
        "permitted",
    ],
)
def test_port_in_use_messages_are_recognised(line: str) -> None:
    assert says_port_in_use("Starting server\n" + line)


def test_other_crashes_are_not_taken_for_a_busy_port() -> None:
    assert not says_port_in_use("ModuleNotFoundError: No module named 'torch'")


def test_specs_are_hashable_and_compare_by_value() -> None:
    a = spec(env={"CUDA_VISIBLE_DEVICES": "0"}, warmup_prompt={"1": {}})
    b = spec(env={"CUDA_VISIBLE_DEVICES": "0"}, warmup_prompt={"1": {}})
    assert a == b and hash(a) == hash(b)
    assert a != spec(env={"CUDA_VISIBLE_DEVICES": "1"})


def test_files_dir_gives_each_backend_its_own_folders_by_flag() -> None:
    s = spec(files_dir=Path("/var/lib/comfyrun/backends/gpu0"))
    folders = s.folders()
    own = Path("/var/lib/comfyrun/backends/gpu0")
    assert (folders.input_dir, folders.output_dir, folders.temp_dir) == (
        own / "input",
        own / "output",
        own / "temp",
    )
    argv = s.argv(9000)
    assert argv[argv.index("--input-directory") + 1] == str(own / "input")
    assert argv[argv.index("--output-directory") + 1] == str(own / "output")
    assert argv[argv.index("--temp-directory") + 1] == str(own)  # ComfyUI appends "temp"


def test_folders_the_config_names_win_over_files_dir() -> None:
    own = Path("/own")
    named = spec(files_dir=own, extra_args=("--output-directory", "/shared/out"))
    folders = named.folders()
    assert folders.output_dir == Path("/shared/out")
    assert folders.input_dir == own / "input"
    assert "--output-directory" not in folders.flags
    based = spec(files_dir=own, extra_args=("--base-directory", "/base"))
    assert based.folders().input_dir == Path("/base/input") and based.folders().flags == ()
