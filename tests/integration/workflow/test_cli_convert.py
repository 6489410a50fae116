"""`comfyrun convert` through typer's CliRunner, offline and against a live /object_info."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer
from tests.integration.workflow.conftest import load_json
from typer.testing import CliRunner, Result

from comfyrun.cli import convert

PAIR = "syn_primitive_nodes"


def _text(result: Result) -> str:
    """The output with rich's error box and line wrapping taken out."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Keeps `convert` a subcommand, as in the real app."""

    convert.register(app)
    return app


@pytest.fixture
def object_info_server(fixtures_dir: Path) -> Iterator[str]:
    body = (fixtures_dir / "object_info.json").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path in ("/object_info", "/keyed/object_info") else 404
            if self.path.startswith("/keyed/") and self.headers["Authorization"] != "Bearer k1":
                status = 401
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if status == 200 else 2))
            self.end_headers()
            self.wfile.write(body if status == 200 else b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_convert_offline_prints_the_frontend_prompt(cli: typer.Typer, fixtures_dir: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(fixtures_dir / f"{PAIR}.ui.json"),
            "--object-info",
            str(fixtures_dir / "object_info.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == load_json(fixtures_dir / f"{PAIR}.api.json")


def test_convert_reads_object_info_from_a_server(
    cli: typer.Typer, fixtures_dir: Path, object_info_server: str, tmp_path: Path
) -> None:
    target = tmp_path / "api.json"
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(fixtures_dir / f"{PAIR}.ui.json"),
            "--server",
            object_info_server,
            "-o",
            str(target),
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_json(target) == load_json(fixtures_dir / f"{PAIR}.api.json")


def test_convert_without_definitions_says_what_to_pass(
    cli: typer.Typer, fixtures_dir: Path
) -> None:
    nothing_there = {"COMFYRUN_SERVER": "http://127.0.0.1:9"}  # the discard port: refused
    result = CliRunner().invoke(
        cli, ["convert", str(fixtures_dir / f"{PAIR}.ui.json")], env=nothing_there
    )
    assert result.exit_code == 2
    assert "pass --object-info FILE" in _text(result)


def test_convert_uses_the_running_server_and_its_api_key_by_default(
    cli: typer.Typer, fixtures_dir: Path, object_info_server: str
) -> None:
    env = {"COMFYRUN_SERVER": f"{object_info_server}/keyed"}
    workflow = str(fixtures_dir / f"{PAIR}.ui.json")
    result = CliRunner().invoke(cli, ["convert", workflow, "--api-key", "k1"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == load_json(fixtures_dir / f"{PAIR}.api.json")
    refused = CliRunner().invoke(cli, ["convert", workflow], env=env)
    assert refused.exit_code == 2
    assert "401" in _text(refused)


def test_convert_refuses_unknown_node_types_with_their_names(
    cli: typer.Typer, fixtures_dir: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(fixtures_dir / "negative" / "video_wan2_2_14B_animate.ui.json"),
            "--object-info",
            str(fixtures_dir / "object_info.json"),
        ],
    )
    assert result.exit_code == 2
    assert "PointsEditor" in result.stderr and "Sam2Segmentation" in result.stderr
    assert result.stdout == ""


def test_convert_rejects_files_that_are_not_workflows(cli: typer.Typer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text('{"hello": "world"}')
    runner = CliRunner()
    result = runner.invoke(cli, ["convert", str(broken), "--object-info", str(broken)])
    assert result.exit_code == 2 and "not valid JSON" in _text(result)
    result = runner.invoke(cli, ["convert", str(other), "--object-info", str(other)])
    assert result.exit_code == 2 and "neither a UI workflow nor an API prompt" in _text(result)
    result = runner.invoke(cli, ["convert", str(tmp_path / "absent.json")])
    assert result.exit_code == 2 and "cannot read" in _text(result)


def test_an_api_prompt_passes_through_unchanged(cli: typer.Typer, tmp_path: Path) -> None:
    prompt = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    source = tmp_path / "api.json"
    source.write_text(json.dumps(prompt))
    result = CliRunner().invoke(cli, ["convert", str(source)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == prompt


def test_an_unreachable_server_is_a_clear_error(cli: typer.Typer, fixtures_dir: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(fixtures_dir / f"{PAIR}.ui.json"),
            "--server",
            "http://127.0.0.1:9",
            "--timeout",
            "5",
        ],
    )
    assert result.exit_code == 2
    assert "cannot load object_info" in _text(result)


def test_the_workflow_can_come_from_stdin(cli: typer.Typer, fixtures_dir: Path) -> None:
    ui = (fixtures_dir / f"{PAIR}.ui.json").read_text()
    result = CliRunner().invoke(
        cli, ["convert", "-", "--object-info", str(fixtures_dir / "object_info.json")], input=ui
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == load_json(fixtures_dir / f"{PAIR}.api.json")
