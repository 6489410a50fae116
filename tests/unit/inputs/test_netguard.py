"""The SSRF rules: which addresses a URL input may reach."""

from __future__ import annotations

import pytest

from comfyrun.errors import InputRejected
from comfyrun.inputs import AddressPolicy
from comfyrun.inputs.netguard import literal_ip

OPEN = AddressPolicy()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::1",
        "fe80::1%eth0",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(InputRejected) as caught:
        OPEN.check_address(address, host="h")
    assert caught.value.details["reason"] == "private_address"


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    OPEN.check_address(address, host="h")


def test_allow_list_by_cidr_and_by_host() -> None:
    policy = AddressPolicy.from_entries(["127.0.0.1", "10.0.0.0/8", "MinIO.internal."])
    policy.check_address("127.0.0.1", host="localhost")
    policy.check_address("10.9.9.9", host="x")
    policy.check_address("192.168.0.5", host="minio.internal")
    with pytest.raises(InputRejected):
        policy.check_address("127.0.0.2", host="localhost")
    with pytest.raises(InputRejected):
        policy.check_address("192.168.0.5", host="other.internal")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "bad_scheme"),
        ("ftp://example.com/a.png", "bad_scheme"),
        ("gopher://example.com/", "bad_scheme"),
        ("javascript:alert(1)", "bad_scheme"),
        ("http:///nohost", "bad_url"),
        ("http://example.com:99999/", "bad_url"),
        ("http://exa mple.com/", "bad_url"),  # not a host name (DNS would fail it, later)
        # urlsplit drops tabs and line breaks (to "http://ab/"), an HTTP client refuses them
        ("http://a\r\nb/", "bad_url"),
        ("http://example.com/a\tb.png", "bad_url"),
        ("http://example.com/\x00", "bad_url"),
        ("http://127.0.0.1/a.png", "private_address"),
        ("http://[::1]:8080/a.png", "private_address"),
        ("http://169.254.169.254/latest/meta-data", "private_address"),
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(InputRejected) as caught:
        OPEN.check_url(url)
    assert caught.value.details["reason"] == reason


def test_check_url_leaves_host_names_to_the_resolver() -> None:
    assert OPEN.check_url("https://example.com/a.png").hostname == "example.com"
    assert OPEN.check_url("https://example.com/my image.png").path == "/my image.png"  # quoted


def test_the_messages_name_the_urls_role() -> None:
    with pytest.raises(InputRejected) as caught:
        OPEN.check_url("http://127.0.0.1/hook", what="webhook URL")
    assert caught.value.message.startswith("webhook URL host '127.0.0.1'")
    with pytest.raises(InputRejected) as caught:
        OPEN.check_url("ftp://x/a.png")
    assert caught.value.message.startswith("input URL scheme")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.65535", "10.0.255.255"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("0", "0.0.0.0"),
    ],
)
def test_ipv4_is_read_as_the_c_resolver_reads_it(host: str, address: str) -> None:
    assert str(literal_ip(host)) == address


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.1.1.1", "08.1", "1e3", "0x1g"])
def test_names_are_not_addresses(host: str) -> None:
    assert literal_ip(host) is None


@pytest.mark.parametrize("url", ["http://localhost/x", "http://a.b.LOCALHOST./x"])
def test_localhost_names_are_loopback_without_dns(url: str) -> None:
    with pytest.raises(InputRejected) as caught:
        OPEN.check_url(url)
    assert caught.value.details["reason"] == "private_address"
    AddressPolicy.from_entries(["localhost", "a.b.localhost"]).check_url(url)
