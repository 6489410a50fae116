"""Content-Disposition for a file of any name: ComfyUI's exact header for a plain name, RFC
6266's `filename*` for the rest (a header is Latin-1 and one line)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from comfyrun.api.routes.files import content_disposition


def test_a_plain_name_is_sent_as_comfyui_sends_it() -> None:
    assert content_disposition("ComfyUI_00001_.png") == 'filename="ComfyUI_00001_.png"'
    assert content_disposition("a b.png", "inline") == 'inline; filename="a b.png"'


@pytest.mark.parametrize(
    "name", ["фото 名前.png", 'say "hi".png', "back\\slash.png", "line\r\nX-Injected: 1.png"]
)
def test_any_other_name_is_sent_as_utf8_beside_an_ascii_stand_in(name: str) -> None:
    header = content_disposition(name, "attachment")
    header.encode("latin-1")  # writable as a header at all
    assert "\r" not in header and "\n" not in header
    plain, star = header.removeprefix("attachment; ").split("; ")
    assert plain.startswith('filename="') and plain.endswith('"')
    assert '"' not in plain[len('filename="') : -1] and "\\" not in plain
    assert star.startswith("filename*=UTF-8''")
    assert unquote(star.removeprefix("filename*=UTF-8''")) == name
