"""Output kinds from ComfyUI history keys and file extensions."""

from __future__ import annotations

import pytest

from comfyrun.core.job import OutputType
from comfyrun.outputs import classify_output, content_type_for


@pytest.mark.parametrize(
    ("key", "filename", "kind", "content_type"),
    [
        ("images", "ComfyUI_00001_.png", OutputType.IMAGE, "image/png"),
        ("images", "x.JPG", OutputType.IMAGE, "image/jpeg"),
        ("images", "anim.webp", OutputType.IMAGE, "image/webp"),
        ("gifs", "AnimateDiff_00001.gif", OutputType.IMAGE, "image/gif"),
        ("gifs", "AnimateDiff_00001.mp4", OutputType.VIDEO, "video/mp4"),
        ("images", "clip.webm", OutputType.VIDEO, "video/webm"),
        ("videos", "clip.mov", OutputType.VIDEO, "video/quicktime"),
        ("audio", "speech.flac", OutputType.AUDIO, "audio/flac"),
        ("audio", "speech.mp3", OutputType.AUDIO, "audio/mpeg"),
        ("audio", "speech.wav", OutputType.AUDIO, "audio/wav"),
        ("text", "notes.txt", OutputType.TEXT, "text/plain"),
        ("latents", "x.latent", OutputType.LATENT, "application/octet-stream"),
        ("images", "x.latent", OutputType.LATENT, "application/octet-stream"),
        ("3d", "mesh.glb", OutputType.FILE, "model/gltf-binary"),
        ("images", "noext", OutputType.IMAGE, "application/octet-stream"),
        ("audio", "track.unknownext", OutputType.AUDIO, "application/octet-stream"),
        ("whatever", "data.bin", OutputType.FILE, "application/octet-stream"),
        ("images", "meta.json", OutputType.FILE, "application/json"),
    ],
)
def test_classify_output(key: str, filename: str, kind: OutputType, content_type: str) -> None:
    assert classify_output(key, filename) == (kind, content_type)


def test_content_type_for_unknown_is_octet_stream() -> None:
    assert content_type_for("x.zzz-unknown") == "application/octet-stream"
    assert content_type_for("") == "application/octet-stream"
