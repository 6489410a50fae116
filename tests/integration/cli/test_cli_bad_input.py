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
