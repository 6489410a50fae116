"""Suite-wide settings only. Fixtures live beside the tests that use them, or in tests/support."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared beside the checkout: protocol transcripts and conversion fixtures.
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the suite needs ../shared beside the checkout")
    return SHARED
