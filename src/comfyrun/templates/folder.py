"""The templates folder: `NAME.json` (an API or UI-format workflow) and, beside it, an optional
`NAME.params.json`. Files are read again only when their size or mtime changed, so scanning on
every request is a handful of `stat` calls; a template's `version` is the hash of its files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARAMS_SUFFIX = ".params.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: (size, mtime_ns) of a file, or None when it is absent.
Stamp = tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class TemplateFiles:
    """One template's files as read: parsed JSON, or why they could not be parsed."""

    name: str
    version: str
    workflow: Any = None
    params: Any = None  # None: no params file
    error: str | None = None


class TemplateFolder:
    """Reads a folder of templates, re-reading only what changed since the last scan."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: dict[str, tuple[Stamp, Stamp, TemplateFiles]] = {}

    def scan(self) -> dict[str, TemplateFiles]:
        """Every template in the folder now (blocking file I/O: call it in a thread)."""
        if self.path is None or not self.path.is_dir():
            self._seen.clear()
            return {}
        names = {}
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not entry.is_file() or not entry.name.endswith(".json"):
                    continue
                if entry.name.endswith(PARAMS_SUFFIX):
                    continue
                name = entry.name[: -len(".json")]
                if NAME.match(name):
                    names[name] = Path(entry.path)
        found: dict[str, TemplateFiles] = {}
        for name, wf_path in sorted(names.items()):
            params_path = wf_path.with_name(name + PARAMS_SUFFIX)
            stamps = (_stamp(wf_path), _stamp(params_path))
            seen = self._seen.get(name)
            if seen is not None and seen[:2] == stamps:
                found[name] = seen[2]
                continue
            files = read_template(name, wf_path, params_path)
            if seen is not None:
                log.info(
                    "template reloaded",
                    extra={
                        "action": "template_reloaded",
                        "template": name,
                        "version": files.version,
                    },
                )
            self._seen[name] = (*stamps, files)
            found[name] = files
        for gone in set(self._seen) - set(found):
            del self._seen[gone]
        return found


def read_template(name: str, wf_path: Path, params_path: Path) -> TemplateFiles:
    digest = hashlib.sha256()
    try:
        wf_bytes = wf_path.read_bytes()
        params_bytes = params_path.read_bytes() if params_path.is_file() else None
    except OSError as exc:
        return TemplateFiles(name, "", error=f"cannot read the template: {exc}")
    digest.update(wf_bytes)
    digest.update(b"\0")
    digest.update(params_bytes or b"")
    version = digest.hexdigest()[:16]
    try:
        workflow = json.loads(wf_bytes)
    except ValueError as exc:
        return TemplateFiles(name, version, error=f"{wf_path.name} is not valid JSON: {exc}")
    try:
        params = json.loads(params_bytes) if params_bytes is not None else None
    except ValueError as exc:
        return TemplateFiles(name, version, error=f"{params_path.name} is not valid JSON: {exc}")
    return TemplateFiles(name, version, workflow=workflow, params=params)


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


__all__ = ["PARAMS_SUFFIX", "TemplateFiles", "TemplateFolder", "read_template"]
