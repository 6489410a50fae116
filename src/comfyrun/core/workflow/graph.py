"""Parse a UI-format workflow into typed, read-only graph records.

Two link encodings exist: arrays `[id, origin_id, origin_slot, target_id, target_slot, type]` in the
root graph and objects with those keys inside subgraph definitions; both parse to `Link`. Anything
that is not shaped like a graph raises ConversionError with the offending place named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyrun.errors import ConversionError

#: Node id of a subgraph's input and output pseudo-nodes.
SUBGRAPH_INPUT_ID = "-10"
SUBGRAPH_OUTPUT_ID = "-20"


@dataclass(frozen=True)
class Link:
    id: str
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: str


@dataclass(frozen=True)
class InputSlot:
    name: str
    type: str
    link: str | None
    widget: str | None = None


@dataclass(frozen=True)
class OutputSlot:
    name: str
    type: str
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    mode: int
    title: str | None
    inputs: tuple[InputSlot, ...]
    outputs: tuple[OutputSlot, ...]
    widgets_values: list[Any] | dict[str, Any] | None


@dataclass(frozen=True)
class Graph:
    nodes: Mapping[str, Node]
    links: Mapping[str, Link]

    def links_into(self, target_id: str, target_slot: int) -> list[Link]:
        return [
            link
            for link in self.links.values()
            if link.target_id == target_id and link.target_slot == target_slot
        ]


@dataclass(frozen=True)
class IoSlot:
    """An input or output of a subgraph definition."""

    name: str
    type: str


@dataclass(frozen=True)
class SubgraphDef:
    id: str
    name: str
    graph: Graph
    inputs: tuple[IoSlot, ...]
    outputs: tuple[IoSlot, ...]
    #: Legacy group nodes resolve a bypass by exact type only and promote no widgets.
    legacy_group: bool = False


@dataclass(frozen=True)
class Workflow:
    graph: Graph
    subgraphs: Mapping[str, SubgraphDef] = field(default_factory=dict)
    group_nodes: Mapping[str, Any] = field(default_factory=dict)


def node_key(value: Any) -> str:
    """Node and link ids as strings: the UI writes ints, the API uses strings."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConversionError(f"invalid node or link id {value!r}")
    return str(value)


def as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        raise ConversionError(f"{what} must be an integer, got {value!r}")
    return value


def as_slot(value: Any, what: str) -> int:
    """A slot's index: an integer, never negative (a negative one would index from the end)."""
    slot = as_int(value, what)
    if slot < 0:
        raise ConversionError(f"{what} must not be negative, got {slot}")
    return slot


def parse_link(raw: Any) -> Link:
    if isinstance(raw, list | tuple):
        if len(raw) < 5:
            raise ConversionError(
                f"malformed link {raw!r}: expected [id, origin, slot, target, slot, type]"
            )
        link_id, origin, origin_slot, target, target_slot = raw[:5]
        link_type = raw[5] if len(raw) > 5 else "*"
    elif isinstance(raw, dict):
        try:
            link_id, origin, origin_slot = raw["id"], raw["origin_id"], raw["origin_slot"]
            target, target_slot = raw["target_id"], raw["target_slot"]
        except KeyError as exc:
            raise ConversionError(f"malformed link {raw!r}: missing {exc.args[0]!r}") from None
        link_type = raw.get("type", "*")
    else:
        raise ConversionError(f"malformed link {raw!r}")
    return Link(
        id=node_key(link_id),
        origin_id=node_key(origin),
        origin_slot=as_slot(origin_slot, "link origin_slot"),
        target_id=node_key(target),
        target_slot=as_slot(target_slot, "link target_slot"),
        type=str(link_type) if link_type is not None else "*",
    )


def _parse_input(raw: Any, node_id: str) -> InputSlot:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConversionError(f"node {node_id}: malformed input {raw!r}")
    link = raw.get("link")
    widget = raw.get("widget")
    widget_name = widget.get("name") if isinstance(widget, dict) else None
    return InputSlot(
        name=raw["name"],
        type=str(raw.get("type", "*")),
        link=None if link is None else node_key(link),
        widget=widget_name if isinstance(widget_name, str) else None,
    )


def _parse_output(raw: Any, node_id: str) -> OutputSlot:
    if not isinstance(raw, dict):
        raise ConversionError(f"node {node_id}: malformed output {raw!r}")
    links = raw.get("links") or []
    if not isinstance(links, list):
        raise ConversionError(f"node {node_id}: malformed output links {links!r}")
    return OutputSlot(
        name=str(raw.get("name", "")),
        type=str(raw.get("type", "*")),
        links=tuple(node_key(link) for link in links if link is not None),
    )


def parse_node(raw: Any) -> Node:
    if not isinstance(raw, dict) or "id" not in raw or not isinstance(raw.get("type"), str):
        raise ConversionError(f"malformed node {str(raw)[:200]}: needs an id and a type")
    node_id = node_key(raw["id"])
    inputs = raw.get("inputs") or []
    outputs = raw.get("outputs") or []
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise ConversionError(f"node {node_id}: inputs and outputs must be lists")
    values = raw.get("widgets_values")
    if values is not None and not isinstance(values, list | dict):
        raise ConversionError(f"node {node_id}: widgets_values must be a list")
    mode = raw.get("mode", 0)
    title = raw.get("title")
    return Node(
        id=node_id,
        type=raw["type"],
        mode=mode if isinstance(mode, int) else 0,
        title=title if isinstance(title, str) and title else None,
        inputs=tuple(_parse_input(slot, node_id) for slot in inputs),
        outputs=tuple(_parse_output(slot, node_id) for slot in outputs),
        widgets_values=values,
    )


def parse_graph(nodes: Any, links: Any, where: str) -> Graph:
    if not isinstance(nodes, list) or not isinstance(links, list):
        raise ConversionError(f"{where}: 'nodes' and 'links' must be lists")
    parsed_nodes: dict[str, Node] = {}
    for raw in nodes:
        node = parse_node(raw)
        if node.id in parsed_nodes:
            raise ConversionError(f"{where}: duplicate node id {node.id}")
        parsed_nodes[node.id] = node
    parsed_links = {}
    for raw in links:
        if raw is None:
            continue
        link = parse_link(raw)
        parsed_links[link.id] = link
    return Graph(parsed_nodes, parsed_links)


def _parse_io(raw: Any, where: str) -> tuple[IoSlot, ...]:
    if not isinstance(raw, list):
        raise ConversionError(f"{where} must be a list")
    slots = []
    for slot in raw:
        if not isinstance(slot, dict):
            raise ConversionError(f"{where}: malformed slot {slot!r}")
        slots.append(IoSlot(str(slot.get("name", "")), str(slot.get("type", "*"))))
    return tuple(slots)


def parse_subgraph(raw: Any) -> SubgraphDef:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise ConversionError("definitions.subgraphs: each subgraph needs a string id")
    where = f"subgraph {raw['id']}"
    return SubgraphDef(
        id=raw["id"],
        name=str(raw.get("name") or raw["id"]),
        graph=parse_graph(raw.get("nodes"), raw.get("links", []), where),
        inputs=_parse_io(raw.get("inputs", []), f"{where} inputs"),
        outputs=_parse_io(raw.get("outputs", []), f"{where} outputs"),
    )


def parse_workflow(ui: Any) -> Workflow:
    """Parse a UI-format workflow; raise ConversionError if it is not one."""
    if not isinstance(ui, dict):
        raise ConversionError("a UI workflow must be a JSON object with 'nodes' and 'links'")
    if not isinstance(ui.get("nodes"), list) or not isinstance(ui.get("links"), list):
        raise ConversionError("not a UI workflow: 'nodes' and 'links' must be lists")
    graph = parse_graph(ui["nodes"], ui["links"], "workflow")
    definitions = ui.get("definitions") or {}
    raw_subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    if raw_subgraphs is not None and not isinstance(raw_subgraphs, list):
        raise ConversionError("definitions.subgraphs must be a list")
    subgraphs = {}
    for raw in raw_subgraphs or []:
        subgraph = parse_subgraph(raw)
        subgraphs[subgraph.id] = subgraph
    extra = ui.get("extra") or {}
    groups = extra.get("groupNodes") if isinstance(extra, dict) else None
    return Workflow(graph, subgraphs, groups if isinstance(groups, dict) else {})
