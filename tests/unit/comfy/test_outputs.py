"""Outputs of every kind, from `executed` events and history."""

from __future__ import annotations

import pytest

from comfyrun.comfy.outputs import (
    FileRef,
    ValueOutput,
    files,
    guess_media,
    parse_node_output,
    parse_outputs,
)


def test_files_under_any_key_and_values_apart() -> None:
    output = {
        "images": [{"filename": "a.png", "subfolder": "x", "type": "output"}],
        "gifs": [
            {
                "filename": "v.mp4",
                "subfolder": "",
                "type": "output",
                "format": "video/h264-mp4",
                "frame_rate": 8,
            }
        ],
        "audio": [{"filename": "s.flac", "subfolder": "audio", "type": "output"}],
        "3d": [{"filename": "mesh.glb", "subfolder": "3d", "type": "output"}],
        "text": ["hello", "world"],
        "animated": [True],
    }
    items = parse_node_output("7", output)
    refs = [i for i in items if isinstance(i, FileRef)]
    values = [i for i in items if isinstance(i, ValueOutput)]
    assert [(r.key, r.filename, r.subfolder) for r in refs] == [
        ("images", "a.png", "x"),
        ("gifs", "v.mp4", ""),
        ("audio", "s.flac", "audio"),
        ("3d", "mesh.glb", "3d"),
    ]
    assert [r.media_kind for r in refs] == ["image", "video", "audio", "file"]
    assert [r.content_type for r in refs] == [
        "image/png",
        "video/mp4",
        "audio/flac",
        "model/gltf-binary",
    ]
    assert refs[1].extra == {"format": "video/h264-mp4", "frame_rate": 8}
    assert values == [
        ValueOutput("7", "text", ["hello", "world"]),
        ValueOutput("7", "animated", [True]),
    ]
    assert values[0].media_kind == "text" and values[0].content_type == "text/plain"
    assert all(i.node_id == "7" for i in items)


def test_missing_subfolder_and_type_default() -> None:
    (ref,) = parse_node_output("1", {"images": [{"filename": "a.webp"}]})
    assert isinstance(ref, FileRef)
    assert (ref.subfolder, ref.type, ref.content_type) == ("", "output", "image/webp")
    assert ref.view_params == {"filename": "a.webp", "subfolder": "", "type": "output"}


def test_mixed_list_splits_files_from_values() -> None:
    items = parse_node_output("1", {"files": [{"filename": "a.txt", "type": "output"}, 3]})
    assert items == [FileRef("1", "files", "a.txt", "", "output"), ValueOutput("1", "files", [3])]


def test_parse_outputs_drops_empty_nodes_and_lists_files() -> None:
    parsed = parse_outputs(
        {"1": {}, "2": {"images": [{"filename": "b.png", "type": "temp"}]}, "3": None}
    )
    assert list(parsed) == ["2"]
    assert [f.filename for f in files(parsed)] == ["b.png"]


@pytest.mark.parametrize(
    ("key", "filename", "kind", "content_type"),
    [
        ("images", "x.PNG", "image", "image/png"),
        ("images", "clip.webm", "video", "video/webm"),
        ("gifs", "anim.gif", "image", "image/gif"),
        ("videos", None, "video", "application/json"),
        ("audio", "a.mp3", "audio", "audio/mpeg"),
        ("files", "notes.txt", "text", "text/plain"),
        ("files", "blob.bin", "file", "application/octet-stream"),
        ("latents", "x.latent", "file", "application/octet-stream"),
        ("text", None, "text", "text/plain"),
        ("weird", "noext", "file", "application/octet-stream"),
    ],
)
def test_guess_media(key: str, filename: str | None, kind: str, content_type: str) -> None:
    assert guess_media(key, filename) == (kind, content_type)
