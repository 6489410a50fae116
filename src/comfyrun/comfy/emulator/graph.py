"""Which node runs next, and which nodes are cached: ComfyUI's rules, without I/O.

`ExecutionOrder` follows ComfyUI's ExecutionList: the outputs (and everything they need that
is not cached) are added depth first; among the ready nodes an output node goes first, then a
node that feeds an output, then one two links away, else the first one added.
`signatures` gives each node a key that changes when its inputs change, recursively through
its links; a node whose key is in the cache is served from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

from comfyrun.comfy.validation import is_link

Prompt = dict[str, dict[str, Any]]


class ExecutionOrder:
    def __init__(
        self,
        prompt: Prompt,
        is_output: Callable[[str], bool],
        is_cached: Callable[[str], bool],
    ) -> None:
        self.prompt = prompt
        self.is_output = is_output
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, bool]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if is_link(value):
                    from_id = value[0]
                    if not self.is_cached(from_id):
                        stack.append(from_id)
                        links.append((from_id, unique_id))
        for from_id, to_id in links:
            self._add_link(from_id, to_id)

    def _add_link(self, from_id: str, to_id: str) -> None:
        if to_id not in self.blocking.setdefault(from_id, {}):
            self.blocking[from_id][to_id] = True
            self.block_count[to_id] = self.block_count.get(to_id, 0) + 1

    def is_empty(self) -> bool:
        return not self.pending

    def next(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            raise RuntimeError("dependency cycle detected")
        for node_id in ready:
            if self.is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self.is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for b in self.blocking[node_id]:
                if any(self.is_output(b2) for b2 in self.blocking.get(b, {})):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.get(node_id, {}):
            self.block_count[blocked] -= 1
        self.blocking[node_id] = {}


def signatures(prompt: Prompt, is_changed: Callable[[str], Any]) -> dict[str, str]:
    """node id -> cache key built from class type, constant inputs, `is_changed` and the keys of
    linked nodes (with the output slot), as ComfyUI's input-signature cache does."""
    memo: dict[str, str] = {}

    def key(node_id: str, trail: frozenset[str]) -> str:
        if node_id in memo:
            return memo[node_id]
        node = prompt[node_id]
        parts: list[Any] = [node.get("class_type"), is_changed(node_id)]
        for name in sorted(node.get("inputs", {})):
            value = node["inputs"][name]
            if is_link(value) and value[0] in prompt and value[0] not in trail:
                parts.append([name, "link", key(value[0], trail | {node_id}), value[1]])
            else:
                parts.append([name, "value", value])
        digest = hashlib.sha256(
            json.dumps(parts, sort_keys=True, default=repr).encode()
        ).hexdigest()
        memo[node_id] = digest
        return digest

    return {node_id: key(node_id, frozenset()) for node_id in prompt}


def needed_nodes(prompt: Prompt, outputs: Iterable[str]) -> list[str]:
    """Every node the outputs depend on, outputs included."""
    seen: dict[str, None] = {}
    stack = list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in prompt:
            continue
        seen[node_id] = None
        for value in prompt[node_id]["inputs"].values():
            if is_link(value):
                stack.append(value[0])
    return list(seen)
