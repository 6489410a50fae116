"""ComfyUI's rules for the file names and subfolders its file routes take (pure).

ComfyUI keeps files in three folders, named by a `type` ("input", "output", "temp"); a name
may say its folder itself, annotated as folder_paths.annotated_filepath reads it
("x.png [output]"). A subfolder is joined to its folder and refused when the result leaves it
(server.py's `os.path.commonpath` checks): /upload/image and /upload/mask answer 400, /view
403. "a/../b" stays inside (it is "b"); "/etc" and "../x" leave.
"""

from __future__ import annotations

import posixpath

#: ComfyUI's folders, by the `type` its routes take.
FOLDER_TYPES = ("input", "output", "temp")
#: folder_paths.annotated_filepath's suffixes (after a space): "x.png [output]".
_ANNOTATIONS = (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp"))


def annotated(name: str) -> tuple[str, str | None]:
    """(the name without its annotation, the folder type it names, None if none), as
    folder_paths.annotated_filepath: the suffix and the character before it are cut."""
    for tag, kind in _ANNOTATIONS:
        if name.endswith(tag):
            return name[: -(len(tag) + 1)], kind
    return name, None


def refused_name(filename: str) -> bool:
    """Whether ComfyUI's /view refuses a file name (400): empty, absolute, or holding ".."
    anywhere (its check is that plain: "x..png" too)."""
    return not filename or filename.startswith("/") or ".." in filename


def subfolder_parts(subfolder: str) -> list[str] | None:
    """The path segments `subfolder` names inside its folder ([] for the folder itself), or
    None when it leaves the folder: an absolute path, or one that climbs out with "..".
    ComfyUI joins the subfolder to its folder and normalises; so does this."""
    normal = posixpath.normpath(subfolder or ".")
    if normal.startswith("/") or normal == ".." or normal.startswith("../"):
        return None
    return [p for p in normal.split("/") if p not in ("", ".")]


__all__ = ["FOLDER_TYPES", "annotated", "refused_name", "subfolder_parts"]
