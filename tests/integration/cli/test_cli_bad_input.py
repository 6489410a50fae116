"""The CLI refuses bad input with a clear message and exit status 2, never a traceback: a
workflow file that is not a JSON object or is nested too deeply, a missing items file, a port
out of range, a store or output storage URL it cannot use, a data dir it cannot make, a
backend URL no ComfyUI can be at, two backends of one name. (Each of
these was an uncaught exception, the server's ones once it had begun to start.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfyrun.cli import server
from comfyrun.cli.main import app


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "deep.json").write_text("[" * 5_000 + "]" * 5_000)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["submit", "{dir}/list.json"], "is not a workflow"),
        (["submit", "{dir}/deep.json"], "nested too deeply"),
        (["convert", "{dir}/deep.json"], "nested too deeply"),
        (["batch", "portrait", "{dir}/missing.jsonl"], "cannot read"),
        (["serve", "--port", "99999", "--data-dir", "{dir}"], "65535"),
        (["serve", "--db", "zzz://x", "--data-dir", "{dir}"], "unknown store URL scheme"),
        (["api", "--db", "sqlite:///{dir}/no/such/folder/x.db"], "does not exist"),
        (["serve", "--outputs", "zzz://x", "--data-dir", "{dir}"], "unsupported output storage"),
        (["serve", "--outputs", "s3://", "--data-dir", "{dir}"], "need a bucket"),
        (["serve", "--data-dir", "{dir}/list.json/data"], "cannot make the data dir"),
        (["serve", "--backend", "ftp://x", "--data-dir", "{dir}"], "is not http(s)://host"),
        (
            ["serve", "--backend", "a:8188", "--backend", "http://a:8188", "--data-dir", "{dir}"],
            "two backends are named 'a:8188'",
        ),
    ],
)
def test_bad_input_is_a_clear_error(files: Path, args: list[str], says: str) -> None:
    result = CliRunner().invoke(app, [a.replace("{dir}", str(files)) for a in args])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an exception escaping the command
    assert says in re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


@pytest.mark.parametrize("port", ["-1", "65536", "abc"])
def test_the_emulator_refuses_a_port_that_is_none(port: str) -> None:
    result = CliRunner().invoke(app, ["emulator", "--port", port])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ("queue_mx = 5", "'queue_mx' is not a setting (did you mean 'queue_max'?)"),
        ("[server]\nport = 5", "'server' is not a setting"),
        ("queue_max = ", "is not valid TOML"),
        ('queue_max = "lots"', "queue_max: Input should be a valid integer"),
        ("default_timeout_s = -3", "default_timeout_s: Input should be greater than 0"),
        ("queue_max = -1", "queue_max: Input should be greater than or equal to 1"),
        ('[[backends]]\nurl = "http://a:8188"\nlables = {gpu = "x"}', "backends[0].lables"),
        (
            '[[backends]]\nurl = "http://a:8188"\nextra_args = ["--x"]',
            "extra_args apply only to a ComfyUI comfyrun starts",
        ),
        ('[[backends]]\ncomfy_path = "/c"\nport = 99999', "backends[0].port: Input should be"),
        ('[[backends]]\ncomfy_path = "/c"\nidle_stop_s = -1', "backends[0].idle_stop_s"),
        ('[[backends]]\ncomfy_path = "/c"\nready_timeout_s = 0', "backends[0].ready_timeout_s"),
        (
            '[[backends]]\nurl = "http://a:8188"\n[[backends]]\nurl = "a:8188"',
            "two backends are named 'a:8188'",
        ),
        (
            '[[backends]]\ncomfy_path = "/c"\nwarmup_prompt = "/no/such/warmup.json"',
            "cannot read warmup_prompt",
        ),
    ],
)
def test_a_bad_config_file_is_one_clear_line(
    tmp_path: Path, toml: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(A misspelt key or a [table] was ignored without a word and its setting kept its
    default; a url backend's extra_args, port, env… were ignored; a bad value was pydantic's
    dump of several lines naming COMFYRUN_QUEUE_MAX; a backend port of 99999 or a negative
    idle_stop_s was taken.)"""

    async def started(settings: object) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr(server, "_serve_forever", started)
    config = tmp_path / "comfyrun.toml"
    config.write_text(toml + "\n")
    result = CliRunner().invoke(
        app, ["serve", "--config", str(config), "--data-dir", str(tmp_path / "data")]
    )
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error: "), result.output
    assert says in lines[0]
    assert "COMFYRUN_" not in lines[0] and "pydantic" not in lines[0]
