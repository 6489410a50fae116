"""PostgreSQL tests skip with a reason when the server is away, but fail under CI=true."""

from __future__ import annotations

import pytest
from tests.support.store import require_pg

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/none"


def test_unreachable_postgres_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYRUN_TEST_PG_DSN", UNREACHABLE)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="unreachable"):
        require_pg()


def test_unreachable_postgres_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYRUN_TEST_PG_DSN", UNREACHABLE)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_pg()
