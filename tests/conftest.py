"""Suite-wide settings only. Fixtures live beside the tests that use them, or in tests/support."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

#: ../shared beside the checkout: protocol transcripts and conversion fixtures.
SHARED = Path(__file__).resolve().parents[2] / "shared"
#: Screenshots of the browser tests, kept from the last run (gitignored).
SHOTS = Path(__file__).resolve().parents[1] / ".shots"


def pytest_configure(config: pytest.Config) -> None:
    """Empty .shots once a run: in the controller, not in each pytest-xdist worker (a worker
    starting late would delete what another had just saved)."""
    if not hasattr(config, "workerinput"):
        shutil.rmtree(SHOTS, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the suite needs ../shared beside the checkout")
    return SHARED
