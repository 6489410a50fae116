"""One owner's editor files (settings, saved workflows, subgraphs, keybindings…) in comfyrun's
data dir, as ComfyUI's app/user_manager.py keeps them under its user directory:

    <data_dir>/user/<owner>/comfy.settings.json
    <data_dir>/user/<owner>/workflows/<name>.json

The owner is the caller's API key id, or "default" (ComfyUI's single user) for an admin or a
server without keys. Blocking file I/O: callers run these methods in a thread. Paths that leave
the owner's folder are refused (Forbidden); the API layer answers in ComfyUI's shapes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from comfyrun import errors

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"
_SAFE_OWNER = re.compile(r"[A-Za-z0-9_-]{1,64}")


def owner_folder(users_root: Path, owner: str | None) -> Path:
    """The folder of `owner` (None: ComfyUI's default user) under `users_root`."""
    name = owner or DEFAULT_USER
    if not _SAFE_OWNER.fullmatch(name):
        raise errors.Forbidden("not a valid user", details={"user": name})
    return users_root / name


def file_info(path: Path, relative_to: Path) -> dict[str, Any]:
    stat = path.stat()
    return {
        "path": path.relative_to(relative_to).as_posix(),
        "size": stat.st_size,
        "modified": stat.st_mtime,
        "created": stat.st_ctime,
    }


class UserFiles:
    """The files of one owner, rooted at `root` (created on the first write)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, name: str) -> Path:
        """`name` inside the owner's folder (URL-encoded names are decoded, as ComfyUI does)."""
        if "%" in name:
            name = unquote(name)
        if not name or "\x00" in name:
            raise errors.InvalidRequest("no file name")
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            raise errors.Forbidden("the path leaves the user's folder", details={"path": name})
        return path

    @property
    def exists(self) -> bool:
        return self.root.is_dir()

    # GET /userdata?dir=… ----------------------------------------------------------------------

    def listing(self, directory: str, *, recurse: bool, full_info: bool, split: bool) -> list[Any]:
        """The files (not folders) under `directory`; NotFound when it does not exist."""
        base = self.path(directory)
        if not base.is_dir():
            raise errors.NotFound("Directory not found", details={"dir": directory})
        found = base.rglob("*") if recurse else base.glob("*")
        out: list[Any] = []
        for path in sorted(found):
            if not path.is_file():
                continue
            if full_info:
                out.append(file_info(path, base))
                continue
            rel = path.relative_to(base).as_posix()
            out.append([rel, *rel.split("/")] if split else rel)
        return out

    # GET /v2/userdata?path=… ------------------------------------------------------------------

    def listing_v2(self, rel: str) -> list[dict[str, Any]]:
        """Folders and files under `rel`, folders first then by name (an empty list for a new
        user); NotFound for a missing folder, InvalidRequest for a file."""
        target = self.path(rel) if rel else self.root
        if not target.exists():
            if target == self.root:
                return []
            raise errors.NotFound("Requested path not found", details={"path": rel})
        if not target.is_dir():
            raise errors.InvalidRequest("Requested path is not a directory")
        out: list[dict[str, Any]] = []
        for folder, dirs, files in os.walk(target):
            here = Path(folder)
            for name in dirs:
                out.append(
                    {
                        "name": name,
                        "path": (here / name).relative_to(self.root).as_posix(),
                        "type": "directory",
                    }
                )
            for name in files:
                entry: dict[str, Any] = {
                    "name": name,
                    "path": (here / name).relative_to(self.root).as_posix(),
                    "type": "file",
                }
                try:
                    stat = (here / name).stat()
                    entry |= {"size": stat.st_size, "modified": stat.st_mtime}
                except OSError:
                    pass
                out.append(entry)
        out.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
        return out

    # one file ---------------------------------------------------------------------------------

    def existing(self, name: str) -> Path:
        path = self.path(name)
        if not path.is_file():
            raise errors.NotFound("no such file", details={"file": name})
        return path

    def write(self, name: str, data: bytes, *, overwrite: bool) -> Path:
        path = self.path(name)
        if path == self.root or path.is_dir():
            raise errors.InvalidRequest("that is a folder", details={"file": name})
        if not overwrite and path.exists():
            raise errors.Conflict("File already exists", details={"file": name})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # a reader never sees half a workflow
        except OSError as exc:
            raise errors.InvalidRequest(
                'Invalid filename. Please avoid special characters like :\\/*?"<>|',
                details={"file": name, "error": str(exc)},
            ) from exc
        return path

    def delete(self, name: str) -> None:
        self.existing(name).unlink()

    def move(self, source: str, dest: str, *, overwrite: bool) -> Path:
        """`source`, a file or a folder (with all it holds, as ComfyUI's shutil.move moves
        one), renamed `dest`. A folder as `dest` is refused, as `write` refuses one (moved
        into it, the file took another name than the one answered, and a file of its name
        there was a 500), and so are a `dest` under a file and a folder moved into itself."""
        src = self.path(source)
        if src == self.root or not src.exists():
            raise errors.NotFound("no such file or folder", details={"file": source})
        target = self.path(dest)
        if target == self.root or target.is_dir():
            raise errors.InvalidRequest("that is a folder", details={"file": dest})
        if target.is_relative_to(src):
            raise errors.InvalidRequest("a folder cannot move into itself", details={"file": dest})
        if not overwrite and target.exists():
            raise errors.Conflict("File already exists", details={"file": dest})
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, target)
        except (NotADirectoryError, FileExistsError) as exc:  # a part of `dest` is a file
            raise errors.InvalidRequest(
                "Invalid destination: a part of its path is a file",
                details={"file": dest, "error": str(exc)},
            ) from exc
        return target

    def describe(self, path: Path, *, full_info: bool) -> Any:
        """What a write or a move answers: the file's path, or its file info."""
        return file_info(path, self.root) if full_info else path.relative_to(self.root).as_posix()

    # settings ---------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        path = self.root / SETTINGS_FILE
        if not path.is_file():
            return {}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.error("the user settings file is corrupted: %s", path)
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def save_settings(self, values: dict[str, Any]) -> None:
        self.write(SETTINGS_FILE, json.dumps(values, indent=4).encode(), overwrite=True)


__all__ = ["DEFAULT_USER", "SETTINGS_FILE", "UserFiles", "file_info", "owner_folder"]
