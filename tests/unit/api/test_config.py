"""Settings: defaults, environment (COMFYRUN_* and legacy names), TOML file, precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyrun.config import BackendConfig, Role, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("COMFYRUN_") or name in {
            "COMFYUI_SERVER_ADDRESS",
            "DEFAULT_TIMEOUT",
            "SQLITE_DB_PATH",
            "COMFY_PATH",
            "COMFY_PORT",
            "API_KEY",
            "COMFY_PYTHON",
        }:
            monkeypatch.delenv(name)


def test_defaults_put_database_and_outputs_in_the_data_dir(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'comfyrun.db'}"
    assert s.outputs_url == (tmp_path.resolve() / "outputs").as_uri()
    assert s.retention_hours == 24
    assert s.role is Role.SERVE
    assert s.backends == []
    assert not s.auth_enabled


def test_comfyrun_env_and_legacy_aliases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COMFYRUN_PORT", "9001")
    monkeypatch.setenv("COMFYUI_SERVER_ADDRESS", "127.0.0.1:8188")
    monkeypatch.setenv("DEFAULT_TIMEOUT", "42")
    monkeypatch.setenv("SQLITE_DB_PATH", str(tmp_path / "jobs.db"))
    monkeypatch.setenv("COMFY_PATH", "/opt/ComfyUI")
    monkeypatch.setenv("COMFY_PORT", "8190")
    monkeypatch.setenv("API_KEY", "tok")
    s = load_settings()
    assert s.port == 9001
    assert s.default_timeout_s == 42
    assert s.database_url == f"sqlite:///{(tmp_path / 'jobs.db').resolve()}"
    assert BackendConfig(url="http://127.0.0.1:8188") in s.backends
    managed = [b for b in s.backends if b.managed]
    assert managed[0].comfy_path == Path("/opt/ComfyUI") and managed[0].port == 8190
    assert s.api_keys == ["tok"]


def test_unprefixed_common_names_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "1")
    s = load_settings()
    assert s.host == "127.0.0.1" and s.port == 8189


def test_backends_from_a_comma_list_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYRUN_BACKENDS", "http://a:1, b:2")
    assert [b.url for b in load_settings().backends] == ["http://a:1", "http://b:2"]
    monkeypatch.setenv("COMFYRUN_BACKENDS", '[{"comfy_path": "/x", "name": "gpu0"}]')
    (b,) = load_settings().backends
    assert b.managed and b.name == "gpu0"


def test_toml_file_below_env_and_explicit_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "comfyrun.toml"
    cfg.write_text(
        'port = 7000\nqueue_max = 5\nretention_hours = 2\napi_keys = ["k1"]\n'
        '[[backends]]\nurl = "http://gpu-1:8188"\n'
        '[[backends]]\nname = "local"\ncomfy_path = "/opt/c"\nenv = { CUDA_VISIBLE_DEVICES = "0" }\n'
    )
    monkeypatch.setenv("COMFYRUN_QUEUE_MAX", "9")
    s = load_settings(cfg, retention_hours=3)
    assert s.port == 7000  # from the file
    assert s.queue_max == 9  # env beats the file
    assert s.retention_hours == 3  # explicit beats both
    assert s.api_keys == ["k1"]
    assert [b.url for b in s.backends] == ["http://gpu-1:8188", None]
    assert s.backends[1].env == {"CUDA_VISIBLE_DEVICES": "0"}


def test_config_file_from_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("emulators = 3\n")
    monkeypatch.setenv("COMFYRUN_CONFIG", str(cfg))
    assert load_settings().emulators == 3


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_a_backend_needs_exactly_one_kind() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        BackendConfig(url="http://a:1", comfy_path=Path("/x"))
    with pytest.raises(ValidationError, match="exactly one"):
        BackendConfig()


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(retention_hours=0)
    with pytest.raises(ValidationError):
        Settings(emulators=-1)


def test_gpus_shorthand_is_one_process_per_gpu(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[[backends]]\nname = "comfy"\ncomfy_path = "/opt/ComfyUI"\ngpus = [0, 2]\n'
        'env = { HF_HOME = "/cache" }\n'
    )
    (cfg,) = load_settings(toml).backends
    expanded = cfg.per_gpu("comfy")
    assert [name for name, _ in expanded] == ["comfy-gpu0", "comfy-gpu2"]
    assert [one.env for _, one in expanded] == [
        {"HF_HOME": "/cache", "CUDA_VISIBLE_DEVICES": "0"},
        {"HF_HOME": "/cache", "CUDA_VISIBLE_DEVICES": "2"},
    ]
    assert all(one.gpus is None and one.comfy_path == cfg.comfy_path for _, one in expanded)
    assert BackendConfig(comfy_path=Path("/c")).per_gpu("c")[0][0] == "c"


@pytest.mark.parametrize(
    "table",
    [
        {"url": "http://a:8188", "gpus": [0]},
        {"comfy_path": "/c", "gpus": []},
        {"comfy_path": "/c", "gpus": [0, 0]},
        {"comfy_path": "/c", "gpus": [-1]},
        {"comfy_path": "/c", "gpus": [0, 1], "port": 8188},
    ],
)
def test_bad_gpus_are_refused(table: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=r"gpus|port"):
        BackendConfig.model_validate(table)


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:8188", "http://127.0.0.1:8188"),
        (" comfyui:8188/ ", "http://comfyui:8188"),
        ("https://gpu.example/comfy/", "https://gpu.example/comfy"),
        ("http://[::1]:8188", "http://[::1]:8188"),
    ],
)
def test_backend_urls_are_normalised(given: str, url: str) -> None:
    assert BackendConfig(url=given).url == url


@pytest.mark.parametrize(
    "url", ["http://", "https:///x", "ftp://host", "ws://host:8188", "host:99999", "host:x", "a:"]
)
def test_a_backend_url_no_comfyui_can_be_at_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="is not http"):
        BackendConfig(url=url)
    with pytest.raises(ValidationError, match="is not http"):
        Settings(comfyui_server_address=url)


@pytest.mark.parametrize(
    "backends",
    [
        ["http://a:8188", "http://a:8188/"],
        ["a:8188", "http://a:8188"],
        [{"url": "http://a:1", "name": "x"}, {"url": "http://b:1", "name": "x"}],
        [{"comfy_path": "/c", "gpus": [0, 1]}, {"url": "http://b:1", "name": "comfy-1-gpu1"}],
    ],
)
def test_two_backends_of_one_name_are_refused(backends: list[object]) -> None:
    """(The pool refused them only as it started: a traceback, not a configuration error.)"""
    with pytest.raises(ValidationError, match="two backends are named"):
        Settings(backends=backends)


def test_backends_of_distinct_names_are_taken() -> None:
    settings = Settings(
        backends=["http://a:8188", "http://a:8189", {"url": "http://a:8188/x", "name": "x"}]
    )
    names = [n for i, b in enumerate(settings.backends) for n in b.names(i)]
    assert names == ["a:8188", "a:8189", "x"]


def test_comfy_python_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_PYTHON", "/opt/venvs/comfy/bin/python")
    assert load_settings().comfy_python == "/opt/venvs/comfy/bin/python"
    assert load_settings(comfy_python="/x/python").comfy_python == "/x/python"


def test_fetch_allow_from_env_and_bad_cidrs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYRUN_FETCH_ALLOW", "10.0.0.0/8, minio.internal,127.0.0.1")
    assert load_settings().fetch_allow == ["10.0.0.0/8", "minio.internal", "127.0.0.1"]
    with pytest.raises(ValidationError, match="neither a CIDR"):
        load_settings(fetch_allow=["10.0.0.0/33"])
