"""A job's model files, as the caller names them (pure): `{url | asset_id, folder, name, hash?}`.

`folder` is a ComfyUI model folder (checkpoints, loras, vae, ...; the legacy `unet` and `clip`
mean `diffusion_models` and `text_encoders`, as in ComfyUI). `name` is the file name workflows
use (it may hold `sub/` folders). `url` is http(s) or s3://; `hash` is `sha256:<hex>` or
`blake3:<hex>` and is checked against the bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from comfyrun.errors import InvalidRequest

#: ComfyUI 0.3.64's model folders (folder_paths.folder_names_and_paths), custom_nodes excluded.
MODEL_FOLDERS = frozenset(
    {
        "checkpoints",
        "configs",
        "loras",
        "vae",
        "text_encoders",
        "diffusion_models",
        "clip_vision",
        "style_models",
        "embeddings",
        "diffusers",
        "vae_approx",
        "controlnet",
        "gligen",
        "upscale_models",
        "hypernetworks",
        "photomaker",
        "classifiers",
        "model_patches",
        "audio_encoders",
    }
)
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders", "t2i_adapter": "controlnet"}
MAX_MODELS = 32
_HASH = re.compile(r"^(sha256|blake3):([0-9a-f]{64})$")
_SCHEMES = ("http://", "https://", "s3://")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One model file a job needs. Exactly one of `url` and `asset_id` is set."""

    folder: str
    name: str
    url: str | None = None
    asset_id: str | None = None
    hash: str | None = None  # "sha256:<hex>" or "blake3:<hex>", lower case

    @property
    def source(self) -> str:
        """What identifies the bytes before they are hashed: the URL or `asset:<id>`."""
        return self.url if self.url is not None else f"asset:{self.asset_id}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"folder": self.folder, "name": self.name}
        for key in ("url", "asset_id", "hash"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def parse_model(raw: Any, where: str = "models[0]") -> ModelRef:
    """Validate one entry; InvalidRequest says what is wrong with it."""
    if not isinstance(raw, dict):
        raise _bad(where, "must be an object with url or asset_id, folder and name")
    unknown = sorted(set(raw) - {"url", "asset_id", "folder", "name", "hash"})
    if unknown:
        raise _bad(where, f"unknown fields {unknown}")
    url, asset_id = raw.get("url"), raw.get("asset_id")
    if (url is None) == (asset_id is None):
        raise _bad(where, "give exactly one of url and asset_id")
    if url is not None and (not isinstance(url, str) or not url.lower().startswith(_SCHEMES)):
        raise _bad(where, "url must be an http(s):// or s3:// URL")
    if asset_id is not None and (not isinstance(asset_id, str) or not asset_id):
        raise _bad(where, "asset_id must be a non-empty string")
    folder = raw.get("folder")
    if not isinstance(folder, str):
        raise _bad(where, "folder is required (checkpoints, loras, vae, ...)")
    folder = LEGACY_FOLDERS.get(folder, folder)
    if folder not in MODEL_FOLDERS:
        raise _bad(
            where, f"folder {folder!r} is not a ComfyUI model folder: {sorted(MODEL_FOLDERS)}"
        )
    name = _clean_name(raw.get("name"), where)
    digest = raw.get("hash")
    if digest is not None:
        if not isinstance(digest, str) or not _HASH.match(digest.lower()):
            raise _bad(where, "hash must be 'sha256:<64 hex>' or 'blake3:<64 hex>'")
        digest = digest.lower()
    return ModelRef(folder=folder, name=name, url=url, asset_id=asset_id, hash=digest)


def parse_models(raw: Any) -> tuple[ModelRef, ...]:
    """A job's `models` list (None or empty: none). Two entries may not claim one folder/name
    with different sources."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise InvalidRequest("models must be a list", details={"field": "models"})
    if len(raw) > MAX_MODELS:
        raise InvalidRequest(
            f"a job may bring at most {MAX_MODELS} model files", details={"field": "models"}
        )
    refs = tuple(parse_model(item, f"models[{i}]") for i, item in enumerate(raw))
    seen: dict[tuple[str, str], ModelRef] = {}
    for ref in refs:
        other = seen.setdefault((ref.folder, ref.name), ref)
        if other.source != ref.source or other.hash != ref.hash:
            raise InvalidRequest(
                f"models: {ref.folder}/{ref.name} is given twice with different sources",
                details={"field": "models"},
            )
    return tuple(dict.fromkeys(refs))


def _clean_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(where, "name is required (the file name the workflow uses)")
    path = PurePosixPath(value.replace("\\", "/"))
    parts = path.parts
    if (
        path.is_absolute()
        or any(p in ("", ".", "..") for p in parts)
        or any(p.startswith(".") for p in parts)
        or len(value) > 255
        or any(ord(c) < 32 for c in value)
    ):
        raise _bad(where, f"name {value!r} must be a relative file name without '..' or dot files")
    return "/".join(parts)


def _bad(where: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {message}", details={"field": where})


__all__ = [
    "LEGACY_FOLDERS",
    "MAX_MODELS",
    "MODEL_FOLDERS",
    "ModelRef",
    "parse_model",
    "parse_models",
]
