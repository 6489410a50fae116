"""ComfyUI's extra model paths (`extra_model_paths.yaml`, `--extra-model-paths-config`).

Follows ComfyUI 0.3.64's `utils/extra_config.py`: each top-level section may have `base_path`
(`~` and `$VARS` expanded; relative to the yaml's folder) and `is_default`; every other key is a
model folder name whose value is one path per line, joined to `base_path` when there is one,
else taken relative to the yaml's folder. The legacy names `unet` and `clip` mean
`diffusion_models` and `text_encoders` (folder_paths.map_legacy). A default path is searched
first, others after the folder's own `models/<name>`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

LEGACY_NAMES = {"unet": "diffusion_models", "clip": "text_encoders"}


class ExtraPaths:
    """Model folder name → extra folders, first-searched (`is_default`) ones apart."""

    def __init__(self) -> None:
        self.first: dict[str, list[Path]] = {}
        self.last: dict[str, list[Path]] = {}

    def add(self, folder: str, path: Path, *, is_default: bool) -> None:
        folder = LEGACY_NAMES.get(folder, folder)
        target = self.first if is_default else self.last
        paths = target.setdefault(folder, [])
        if path not in paths:
            if is_default:
                paths.insert(0, path)
            else:
                paths.append(path)

    def load(self, yaml_file: Path) -> None:
        """Add the paths of one yaml file (as ComfyUI's load_extra_path_config does)."""
        with open(yaml_file, encoding="utf-8") as stream:
            config = yaml.safe_load(stream)
        yaml_dir = os.path.dirname(os.path.abspath(yaml_file))
        for section in (config or {}).values():
            if not isinstance(section, dict):
                continue
            conf = dict(section)
            base_path = conf.pop("base_path", None)
            if base_path is not None:
                base_path = os.path.expandvars(os.path.expanduser(str(base_path)))
                if not os.path.isabs(base_path):
                    base_path = os.path.abspath(os.path.join(yaml_dir, base_path))
            is_default = bool(conf.pop("is_default", False))
            for folder, value in conf.items():
                for line in str(value).split("\n"):
                    if not line:
                        continue
                    full = line
                    if base_path:
                        full = os.path.join(base_path, full)
                    elif not os.path.isabs(full):
                        full = os.path.abspath(os.path.join(yaml_dir, line))
                    self.add(str(folder), Path(os.path.normpath(full)), is_default=is_default)

    def search_order(self, folder: str, own: Path | None) -> list[Path]:
        """Where ComfyUI looks for files of `folder`: defaults, its own folder, the others."""
        own_paths = [own] if own is not None else []
        return [*self.first.get(folder, []), *own_paths, *self.last.get(folder, [])]

    def folders(self) -> set[str]:
        return set(self.first) | set(self.last)


__all__ = ["LEGACY_NAMES", "ExtraPaths"]
