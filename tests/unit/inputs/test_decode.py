"""Inline input data: base64 and data: URIs."""

from __future__ import annotations

import base64

import pytest

from comfyrun.errors import InputRejected
from comfyrun.inputs import decode_data, sniff_content_type

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20


def test_plain_base64() -> None:
    assert decode_data(base64.b64encode(PNG).decode(), max_bytes=100) == (PNG, None)


def test_base64_with_whitespace_urlsafe_and_no_padding() -> None:
    data = bytes(range(250))
    text = base64.urlsafe_b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(text[i : i + 60] for i in range(0, len(text), 60))
    assert decode_data(wrapped, max_bytes=1000)[0] == data


def test_data_uri_with_type() -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert decode_data(uri, max_bytes=100) == (PNG, "image/png")


def test_data_uri_with_parameters_and_percent_encoding() -> None:
    assert decode_data("data:text/plain;charset=utf-8,hello%20there", max_bytes=100) == (
        b"hello there",
        "text/plain",
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not base64!!", "bad_base64"),
        ("data:image/png;base64", "bad_data_uri"),
        ("data:image/png;base64,@@@", "bad_base64"),
        ("", "empty"),
    ],
)
def test_refused(text: str, reason: str) -> None:
    with pytest.raises(InputRejected) as caught:
        decode_data(text, max_bytes=100, index=2)
    assert caught.value.details["reason"] == reason
    assert caught.value.details["index"] == 2


def test_size_cap_is_exact() -> None:
    text = base64.b64encode(b"x" * 100).decode()
    assert len(decode_data(text, max_bytes=100)[0]) == 100
    with pytest.raises(InputRejected) as caught:
        decode_data(text, max_bytes=99)
    assert caught.value.details["reason"] == "file_too_large"


def test_huge_text_is_refused_before_decoding() -> None:
    with pytest.raises(InputRejected):
        decode_data("A" * 4_000_000, max_bytes=1000)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
        (b"\x1aE\xdf\xa3", "video/webm"),
        (b"ID3\x03", "audio/mpeg"),
        (b"hello", None),
    ],
)
def test_sniff(head: bytes, expected: str | None) -> None:
    assert sniff_content_type(head) == expected
