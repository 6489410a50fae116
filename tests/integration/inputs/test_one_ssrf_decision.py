"""One SSRF decision: a URL input the fetcher would refuse is refused at submission (422), for
every spelling of a non-public address, and the fetcher refuses each of them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.api import asgi_app, memory_settings

from comfyrun.errors import InputRejected
from comfyrun.inputs import InputLimits, UrlFetcher, check_submission

#: A LoadImage fed by a URL input, saved.
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}

LOOPBACK_SPELLINGS = [
    "http://localhost/a.png",
    "http://LOCALHOST./a.png",
    "http://api.localhost/a.png",
    "http://127.0.0.1/a.png",
    "http://0x7f000001/a.png",
    "http://2130706433/a.png",
    "http://017700000001/a.png",
    "http://0177.0.0.1/a.png",
    "http://0x7f.1/a.png",
    "http://127.1/a.png",
    "http://[::1]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://[::ffff:7f00:1]/a.png",
    "http://[::]/a.png",
    "http://0/a.png",
    "http://user:pw@127.0.0.1:8080/a.png",
    "https://169.254.169.254/latest/meta-data",
    "http://10.1.2.3/a.png",
]


def _inputs(url: str) -> list[dict[str, Any]]:
    return [{"url": url, "node": "1", "input": "image"}]


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
async def test_refused_at_submission_with_422(url: str, tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        r = await client.post("/api/v2/jobs", json={"workflow": WORKFLOW, "inputs": _inputs(url)})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"]["reason"] == "private_address"


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
async def test_the_fetch_refuses_the_same_urls_the_same_way(url: str, tmp_path: Path) -> None:
    fetcher = UrlFetcher(InputLimits(fetch_timeout_s=10))
    with pytest.raises(InputRejected) as at_submission:
        await fetcher.check(url)
    with pytest.raises(InputRejected) as at_fetch:
        await fetcher.fetch(url, tmp_path / "x")
    assert at_submission.value.details["reason"] == "private_address"
    assert at_fetch.value.details["reason"] == "private_address"


async def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    async def dns(host: str, port: int) -> list[str]:
        return {"mixed.example": ["93.184.216.34", "10.0.0.7"], "ok.example": ["93.184.216.34"]}[
            host
        ]

    with pytest.raises(InputRejected) as caught:
        await check_submission(
            WORKFLOW, _inputs("http://mixed.example/a.png"), assets=None, resolve=dns
        )
    assert caught.value.details["address"] == "10.0.0.7"
    await check_submission(WORKFLOW, _inputs("http://ok.example/a.png"), assets=None, resolve=dns)


async def test_a_name_that_does_not_resolve_now_is_left_to_the_fetch() -> None:
    async def dns(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    await check_submission(WORKFLOW, _inputs("http://gone.example/a.png"), assets=None, resolve=dns)


async def test_the_allow_list_opens_the_same_doors_at_submission() -> None:
    limits = InputLimits(allow_networks=("127.0.0.0/8", "localhost"))
    for url in ("http://localhost/a.png", "http://0x7f000001/a.png", "http://127.1/a.png"):
        await check_submission(WORKFLOW, _inputs(url), assets=None, limits=limits)


@pytest.mark.parametrize(
    ("model", "code", "reason"),
    [
        ({"url": "http://127.0.0.1/x.safetensors"}, "input_rejected", "private_address"),
        ({"url": "http://10.1.2.3/x.safetensors"}, "input_rejected", "private_address"),
        ({"url": "s3://"}, "input_rejected", "bad_url"),
        ({"asset_id": "no-such-asset"}, "missing_asset", None),
    ],
)
async def test_a_model_file_the_download_would_refuse_is_refused_at_submission(
    model: dict[str, Any], code: str, reason: str | None, tmp_path: Path
) -> None:
    """A job's `models` get the checks its URL inputs get (they were queued, then failed at
    their download): the same SSRF decision, an s3:// URL naming a bucket and key, an asset
    that exists. Nothing is queued."""
    models = [{**model, "folder": "loras", "name": "x.safetensors"}]
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        r = await client.post("/api/v2/jobs", json={"workflow": WORKFLOW, "models": models})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == code and error["details"].get("reason") == reason, error
        if reason == "private_address":
            assert error["message"].startswith("model URL host")
        assert (await client.get("/api/v2/jobs")).json()["jobs"] == []
