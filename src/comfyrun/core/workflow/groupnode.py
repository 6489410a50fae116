"""Legacy group nodes (`workflow>Name`, stored in `extra.groupNodes`) as synthetic subgraphs.

A group definition lists its inner nodes by index and its links as
`[origin_index | None, origin_slot, target_index, target_slot, ..., type]` (a None origin marks a
link that came from outside). The frontend derives the group's sockets and widgets from the inner
nodes: inputs are the inner sockets not fed from inside, outputs the inner outputs not consumed
inside (or marked `external`), and the group's `widgets_values` are the inner nodes' widget values
concatenated in index order. Expanding it into a `SubgraphDef` with input node -10 and output node
-20 lets the ordinary subgraph resolution do the rest; inner ids become "<group id>:<index>".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyrun.core.workflow.graph import (
    SUBGRAPH_INPUT_ID,
    SUBGRAPH_OUTPUT_ID,
    Graph,
    InputSlot,
    IoSlot,
    Link,
    Node,
    SubgraphDef,
    as_int,
    parse_node,
)
from comfyrun.core.workflow.widgets import input_specs, is_widget_spec, widget_layout
from comfyrun.errors import ConversionError

GROUP_PREFIXES = ("workflow>", "workflow/")


def _inner_nodes(name: str, definition: Mapping[str, Any]) -> list[Node]:
    raw_nodes = definition.get("nodes")
    if not isinstance(raw_nodes, list):
        raise ConversionError(f"group node {name!r}: definition has no node list")
    nodes = []
    for position, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            raise ConversionError(f"group node {name!r}: malformed inner node {raw!r}")
        index = raw.get("index", position)
        nodes.append(parse_node({**raw, "id": index}))
    return nodes


def _widget_names(node: Node, object_info: Mapping[str, Any]) -> set[str]:
    spec = object_info.get(node.type)
    if spec is None:
        return {slot.widget for slot in node.inputs if slot.widget}
    return {name for name, input_spec in input_specs(spec) if is_widget_spec(input_spec)}


def expand_group_node(
    name: str, definition: Mapping[str, Any], instance: Node, object_info: Mapping[str, Any]
) -> SubgraphDef:
    """The synthetic subgraph for one instance of a legacy group node."""
    if not isinstance(definition, dict):
        raise ConversionError(f"group node {name!r}: definition must be an object")
    nodes = _inner_nodes(name, definition)
    by_id = {node.id: node for node in nodes}
    raw_links = definition.get("links") or []
    if not isinstance(raw_links, list):
        raise ConversionError(f"group node {name!r}: links must be a list")

    links: dict[str, Link] = {}
    fed: dict[tuple[str, int], str] = {}
    consumed: set[tuple[str, int]] = set()
    for number, raw in enumerate(raw_links):
        if not isinstance(raw, list) or len(raw) < 4:
            raise ConversionError(f"group node {name!r}: malformed link {raw!r}")
        origin, origin_slot, target, target_slot = raw[:4]
        if origin is None:
            continue
        link = Link(
            f"g{number}",
            str(origin),
            as_int(origin_slot, f"group node {name!r} link origin slot"),
            str(target),
            as_int(target_slot, f"group node {name!r} link target slot"),
            str(raw[5]) if len(raw) > 5 else "*",
        )
        if link.origin_id not in by_id or link.target_id not in by_id:
            raise ConversionError(f"group node {name!r}: link {raw!r} names a missing inner node")
        links[link.id] = link
        fed[(link.target_id, link.target_slot)] = link.id
        consumed.add((link.origin_id, link.origin_slot))

    raw_external = definition.get("external") or []
    if not isinstance(raw_external, list):
        raise ConversionError(f"group node {name!r}: external must be a list")
    external = {
        (str(entry[0]), as_int(entry[1], f"group node {name!r} external slot"))
        for entry in raw_external
        if isinstance(entry, list) and len(entry) >= 2
    }

    # Sockets of the group: inner inputs not fed from inside, widgets excluded.
    socket_targets: list[tuple[str, int]] = []
    widget_targets: dict[str, tuple[str, int]] = {}
    for node in nodes:
        widgets = _widget_names(node, object_info)
        for slot_index, slot in enumerate(node.inputs):
            if (node.id, slot_index) in fed:
                continue
            if slot.widget is not None or slot.name in widgets:
                widget_targets.setdefault(slot.name, (node.id, slot_index))
                continue
            socket_targets.append((node.id, slot_index))

    io_inputs: list[IoSlot] = []
    sockets = iter(socket_targets)
    for position, slot in enumerate(instance.inputs):
        target = widget_targets.get(slot.widget) if slot.widget else next(sockets, None)
        io_inputs.append(IoSlot(slot.name, slot.type))
        if target is None:
            continue
        link = Link(f"in{position}", SUBGRAPH_INPUT_ID, position, target[0], target[1], slot.type)
        links[link.id] = link
        fed[target] = link.id

    io_outputs: list[IoSlot] = []
    for node in nodes:
        for slot_index, out in enumerate(node.outputs):
            if (node.id, slot_index) in consumed and (node.id, slot_index) not in external:
                continue
            link = Link(
                f"out{len(io_outputs)}",
                node.id,
                slot_index,
                SUBGRAPH_OUTPUT_ID,
                len(io_outputs),
                out.type,
            )
            links[link.id] = link
            io_outputs.append(IoSlot(out.name, out.type))

    values = instance.widgets_values if isinstance(instance.widgets_values, list) else None
    offset = 0
    wired: dict[str, Node] = {}
    for node in nodes:
        inputs = tuple(
            InputSlot(slot.name, slot.type, fed.get((node.id, index)), slot.widget)
            for index, slot in enumerate(node.inputs)
        )
        widgets_values = node.widgets_values
        spec = object_info.get(node.type)
        if values is not None and spec is not None:
            count = len(widget_layout(node.type, spec))
            widgets_values = values[offset : offset + count]
            offset += count
        wired[node.id] = Node(
            node.id, node.type, node.mode, node.title, inputs, node.outputs, widgets_values
        )
    return SubgraphDef(
        id=instance.type,
        name=name,
        graph=Graph(wired, links),
        inputs=tuple(io_inputs),
        outputs=tuple(io_outputs),
        legacy_group=True,
    )
