"""Conversion fixtures from ../shared/conversion-fixtures: one test per `*.ui.json`/`*.api.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = "conversion-fixtures"


def fixture_names(shared: Path) -> list[str]:
    """Every pair's name: `<name>.ui.json` that has a `<name>.api.json` beside it."""
    folder = shared / FIXTURES
    return sorted(
        path.name.removesuffix(".ui.json")
        for path in folder.glob("*.ui.json")
        if (folder / path.name.replace(".ui.json", ".api.json")).is_file()
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pair_name" in metafunc.fixturenames:
        names = fixture_names(metafunc.config.rootpath.parent / "shared")
        # An empty folder must fail, not silently skip every comparison.
        metafunc.parametrize("pair_name", names or ["<no fixture pairs found>"])


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    return shared_dir / FIXTURES


@pytest.fixture(scope="session")
def object_info(fixtures_dir: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((fixtures_dir / "object_info.json").read_text())
    return info


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
