"""Tell the two workflow formats apart: the UI graph the editor saves, and the API prompt it posts."""

from __future__ import annotations

from typing import Any


def is_ui_workflow(obj: object) -> bool:
    """True for an editor-format workflow: a dict with a "nodes" list and a "links" list."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("nodes"), list)
        and isinstance(obj.get("links"), list)
    )


def is_api_prompt(obj: object) -> bool:
    """True for an API-format prompt: a non-empty dict of node id -> {"class_type", "inputs"}."""
    if not isinstance(obj, dict) or not obj:
        return False
    return all(isinstance(key, str) and _is_api_node(node) for key, node in obj.items())


def _is_api_node(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and isinstance(node.get("class_type"), str)
        and isinstance(node.get("inputs"), dict)
    )
