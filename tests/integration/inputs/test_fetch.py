"""Fetching URL inputs from a real local HTTP server, and every way a fetch is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import pytest
from tests.support.media import BIG, JPEG, PNG

from comfyrun.errors import InputRejected
from comfyrun.inputs import InputLimits, UrlFetcher

LOCAL = InputLimits(allow_networks=("127.0.0.1/32",), fetch_timeout_s=10)


async def refused(fetcher: UrlFetcher, url: str, dest: Path) -> str:
    with pytest.raises(InputRejected) as caught:
        await fetcher.fetch(url, dest)
    assert not await asyncio.to_thread(dest.exists)
    reason = caught.value.details["reason"]
    assert isinstance(reason, str)
    return reason


async def test_fetch_from_an_allow_listed_local_server(media_server: str, tmp_path: Path) -> None:
    fetched = await UrlFetcher(LOCAL).fetch(f"{media_server}/photo.png", tmp_path / "in")
    assert fetched.path.read_bytes() == PNG
    assert (fetched.size_bytes, fetched.content_type, fetched.filename) == (
        len(PNG),
        "image/png",
        "photo.png",
    )


async def test_content_disposition_names_the_file(media_server: str, tmp_path: Path) -> None:
    fetched = await UrlFetcher(LOCAL).fetch(f"{media_server}/attachment", tmp_path / "in")
    assert fetched.path.read_bytes() == JPEG
    assert fetched.filename == "cat.jpg"  # the "../" is dropped
    assert fetched.content_type == "application/octet-stream"


async def test_redirects_within_the_allow_list_are_followed(
    media_server: str, tmp_path: Path
) -> None:
    url = f"{media_server}/redirect?to={quote('/photo.png')}"
    fetched = await UrlFetcher(LOCAL).fetch(url, tmp_path / "in")
    assert fetched.path.read_bytes() == PNG
    assert fetched.url.endswith("/photo.png")


async def test_loopback_is_refused_without_the_allow_list(
    media_server: str, tmp_path: Path
) -> None:
    fetcher = UrlFetcher(InputLimits())
    assert await refused(fetcher, f"{media_server}/photo.png", tmp_path / "a") == "private_address"
    port = media_server.rsplit(":", 1)[1]
    # by name: the check runs on what "localhost" resolves to
    assert (
        await refused(fetcher, f"http://localhost:{port}/photo.png", tmp_path / "b")
        == "private_address"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7/a.png",
        "http://192.168.1.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://0.0.0.0/a.png",
    ],
)
async def test_private_and_link_local_addresses_are_refused(url: str, tmp_path: Path) -> None:
    assert await refused(UrlFetcher(InputLimits()), url, tmp_path / "x") == "private_address"


async def test_a_name_resolving_to_any_private_address_is_refused(tmp_path: Path) -> None:
    async def dns(host: str, port: int) -> list[str]:
        return {"mixed.test": ["93.184.216.34", "10.0.0.1"], "meta.test": ["169.254.169.254"]}[host]

    fetcher = UrlFetcher(InputLimits(), resolve=dns)
    assert await refused(fetcher, "http://mixed.test/a.png", tmp_path / "a") == "private_address"
    assert await refused(fetcher, "https://meta.test/a.png", tmp_path / "b") == "private_address"


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://10.1.1.1/x.png", "file:///etc/passwd"],
)
async def test_a_redirect_to_a_forbidden_place_is_refused(
    media_server: str, target: str, tmp_path: Path
) -> None:
    url = f"{media_server}/redirect?to={quote(target)}"
    reason = await refused(UrlFetcher(LOCAL), url, tmp_path / "x")
    assert reason == ("bad_scheme" if target.startswith("file:") else "private_address")


async def test_a_redirect_to_a_private_name_is_refused(media_server: str, tmp_path: Path) -> None:
    port = media_server.rsplit(":", 1)[1]

    async def dns(host: str, port: int) -> list[str]:
        return ["10.0.0.5"]

    url = f"{media_server}/redirect?to={quote(f'http://internal.test:{port}/photo.png')}"
    assert await refused(UrlFetcher(LOCAL, resolve=dns), url, tmp_path / "x") == "private_address"


async def test_redirect_loops_stop(media_server: str, tmp_path: Path) -> None:
    limits = InputLimits(allow_networks=("127.0.0.1",), max_redirects=3)
    assert (
        await refused(UrlFetcher(limits), f"{media_server}/loop", tmp_path / "x")
        == "too_many_redirects"
    )


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_oversize_downloads_are_refused(media_server: str, path: str, tmp_path: Path) -> None:
    limits = InputLimits(allow_networks=("127.0.0.1",), max_file_bytes=BIG - 1)
    assert (
        await refused(UrlFetcher(limits), media_server + path, tmp_path / "x") == "file_too_large"
    )


async def test_exactly_at_the_size_cap_is_fine(media_server: str, tmp_path: Path) -> None:
    limits = InputLimits(allow_networks=("127.0.0.1",), max_file_bytes=BIG)
    fetched = await UrlFetcher(limits).fetch(f"{media_server}/big-chunked", tmp_path / "x")
    assert fetched.size_bytes == BIG == fetched.path.stat().st_size


async def test_wrong_content_type_is_refused(media_server: str, tmp_path: Path) -> None:
    assert (
        await refused(UrlFetcher(LOCAL), f"{media_server}/page.html", tmp_path / "x")
        == "content_type"
    )


async def test_allowed_content_types_are_configurable(media_server: str, tmp_path: Path) -> None:
    limits = InputLimits(allow_networks=("127.0.0.1",), allowed_content_types=("text/html",))
    fetched = await UrlFetcher(limits).fetch(f"{media_server}/page.html", tmp_path / "x")
    assert fetched.content_type == "text/html"
    assert (
        await refused(UrlFetcher(limits), f"{media_server}/photo.png", tmp_path / "y")
        == "content_type"
    )


async def test_slow_servers_time_out(media_server: str, tmp_path: Path) -> None:
    limits = InputLimits(allow_networks=("127.0.0.1",), fetch_timeout_s=0.5)
    assert await refused(UrlFetcher(limits), f"{media_server}/slow", tmp_path / "x") == "timeout"


@pytest.mark.parametrize("path", ["/slow", "/stall"])
async def test_a_server_that_goes_silent_is_given_up_long_before_the_fetch_timeout(
    media_server: str, path: str, tmp_path: Path
) -> None:
    """(A model download may take an hour: one that hung held its job, and its backend, that
    long.) No answer, or a body that stops coming, for fetch_idle_timeout_s is a timeout."""
    limits = InputLimits(
        allow_networks=("127.0.0.1",), fetch_timeout_s=3600, fetch_idle_timeout_s=0.3
    )
    async with asyncio.timeout(5):
        assert await refused(UrlFetcher(limits), f"{media_server}{path}", tmp_path / "x") == (
            "timeout"
        )


async def test_http_errors_are_refused(media_server: str, tmp_path: Path) -> None:
    assert (
        await refused(UrlFetcher(LOCAL), f"{media_server}/missing.png", tmp_path / "x")
        == "http_status"
    )


async def test_connection_refused_is_a_clear_rejection(tmp_path: Path) -> None:
    limits = InputLimits(allow_networks=("127.0.0.1",), fetch_timeout_s=5)
    assert (
        await refused(UrlFetcher(limits), "http://127.0.0.1:1/a.png", tmp_path / "x")
        == "fetch_failed"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/a.png",
        "http://0x7f.1/a.png",
        "http://127.1/a.png",
        "http://017700000001/a.png",
        "http://user:pw@127.0.0.1/a.png",
        "http://localhost./a.png",
        "http://[::]/a.png",
    ],
)
async def test_disguised_loopback_forms_are_refused(url: str, tmp_path: Path) -> None:
    fetcher = UrlFetcher(InputLimits(fetch_timeout_s=5))
    assert await refused(fetcher, url, tmp_path / "x") in ("private_address", "fetch_failed")
