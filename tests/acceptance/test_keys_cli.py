"""`comfyrun keys create|list|revoke` against a running server, with its config (admin) key."""

from __future__ import annotations

import json

import pytest
from tests.acceptance.conftest import StartServer
from tests.acceptance.test_cli import comfyrun

pytestmark = pytest.mark.slow


async def test_keys_are_created_listed_used_and_revoked(start_server: StartServer) -> None:
    server = start_server("api", "--api-key", "root")
    admin = ("--server", server.url, "--api-key", "root")
    made = await comfyrun(
        "keys", "create", "team-a", "--scope", "submit", "--scope", "read",
        "--max-queued", "3", *admin,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["key"].startswith("crk_") and key["name"] == "team-a"
    assert key["scopes"] == ["read", "submit"] and key["quota"]["max_queued"] == 3

    listed = await comfyrun("keys", "list", *admin)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split("\t")[:3] == ["id", "name", "scopes"]
    assert row.split("\t") == [key["id"], "team-a", "read,submit", "3", "-", "0", "0.0", "active"]
    assert key["key"] not in listed.stdout  # shown once, at creation

    as_tenant = ("--server", server.url, "--api-key", key["key"])
    assert (await comfyrun("jobs", "list", *as_tenant)).returncode == 0
    denied = await comfyrun("keys", "list", *as_tenant)
    assert denied.returncode == 1 and "403" in denied.stderr

    revoked = await comfyrun("keys", "revoke", key["id"], *admin)
    assert revoked.returncode == 0 and key["id"] in revoked.stdout
    after = await comfyrun("jobs", "list", *as_tenant)
    assert after.returncode == 1 and "unauthorized" in after.stderr
    again = await comfyrun("keys", "revoke", key["id"], *admin)
    assert again.returncode == 1 and "not_found" in again.stderr
