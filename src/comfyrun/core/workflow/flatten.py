"""Flatten a workflow into executable nodes and resolve where each input really comes from.

This follows the frontend's (1.27) model: every node, including the inner nodes of subgraph
instances (ids "a:b:c") and of legacy group nodes ("<id>:<index>"), becomes an `ExecNode`.
Resolving an input walks its link upstream:

* into a subgraph instance: to what feeds the definition's output node (-20) at that slot;
* out of a subgraph (origin -10): to the instance's input at that slot, or, when that input is
  unlinked, to the instance's promoted widget value;
* through a bypassed node (mode 4): to its input of a matching type (same slot index first);
* through a virtual node (Reroute, PrimitiveNode): to its input at the same slot, else nothing.

Muted nodes (mode 2) resolve like real nodes; the emitter drops them and every input pointing at
them afterwards, as the frontend does. Muting a subgraph instance therefore changes nothing, and
bypassing one rewires its consumers while its inner nodes are still emitted (frontend quirks).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from comfyrun.core.workflow.graph import (
    SUBGRAPH_INPUT_ID,
    SUBGRAPH_OUTPUT_ID,
    Graph,
    InputSlot,
    Link,
    Node,
    SubgraphDef,
    Workflow,
)
from comfyrun.core.workflow.groupnode import GROUP_PREFIXES, expand_group_node
from comfyrun.errors import ConversionError

#: Frontend-only node types: never sent to the backend.
VIRTUAL_TYPES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})
MODE_NEVER = 2
MODE_BYPASS = 4
#: Subgraphs nested deeper than this are refused (a definition that contains itself).
MAX_DEPTH = 32
#: Flattened graphs larger than this are refused (instances of instances multiply).
MAX_NODES = 50_000


@dataclass(frozen=True)
class Ref:
    """A link to output `slot` of the emitted node `node_id`."""

    node_id: str
    slot: int


@dataclass(frozen=True)
class Value:
    """An input resolved to a plain value (a subgraph instance's widget)."""

    value: Any


Resolved = Ref | Value


@dataclass(frozen=True)
class ExecNode:
    exec_id: str
    node: Node
    graph: Graph
    #: ids of the subgraph instances around this node, outermost first
    path: tuple[str, ...]
    #: the subgraph instance this node sits in, if any
    parent: ExecNode | None
    #: this node's own subgraph definition, when it is a subgraph or group node instance
    subgraph: SubgraphDef | None
    inputs: tuple[InputSlot, ...]

    @property
    def is_virtual(self) -> bool:
        return self.subgraph is not None or self.node.type in VIRTUAL_TYPES


def _join(path: tuple[str, ...], node_id: str) -> str:
    return ":".join((*path, node_id))


def _promoted_slots(subgraph: SubgraphDef) -> set[int]:
    """Definition inputs that feed a widget inside: the instance shows a widget for each."""
    graph = subgraph.graph
    promoted = set()
    for link in graph.links.values():
        if link.origin_id != SUBGRAPH_INPUT_ID:
            continue
        target = graph.nodes.get(link.target_id)
        slot = _slot_of_link(target.inputs, link) if target is not None else None
        if slot is not None and slot.widget is not None:
            promoted.add(link.origin_slot)
    return promoted


def _slot_of_link(inputs: tuple[InputSlot, ...], link: Link) -> InputSlot | None:
    """The input a link feeds: found by link id (saved slot indexes can be compacted)."""
    for slot in inputs:
        if slot.link == link.id:
            return slot
    return inputs[link.target_slot] if link.target_slot < len(inputs) else None


def _instance_inputs(node: Node, subgraph: SubgraphDef) -> tuple[InputSlot, ...]:
    """A subgraph instance has one input per definition input; saved files omit unlinked ones."""
    if subgraph.legacy_group:
        return node.inputs
    saved: dict[str, list[InputSlot]] = {}
    for slot in node.inputs:
        saved.setdefault(slot.name, []).append(slot)
    promoted = _promoted_slots(subgraph)
    inputs = []
    for index, io in enumerate(subgraph.inputs):
        matches = saved.get(io.name)
        link = matches.pop(0).link if matches else None
        widget = io.name if index in promoted else None
        inputs.append(InputSlot(io.name, io.type, link, widget))
    return tuple(inputs)


class ExecGraph:
    """All executable nodes of a workflow, keyed by execution id, with link resolution."""

    def __init__(self, workflow: Workflow, object_info: Mapping[str, Any]) -> None:
        self._workflow = workflow
        self._object_info = object_info
        self.nodes: dict[str, ExecNode] = {}
        #: widget values PrimitiveNodes push into their targets: exec id -> widget name -> value
        self.overrides: dict[str, dict[str, Any]] = {}
        self._add_graph(workflow.graph, (), None)
        self._apply_primitives()

    # -- building ---------------------------------------------------------------------------

    def _add_graph(self, graph: Graph, path: tuple[str, ...], parent: ExecNode | None) -> None:
        if len(path) > MAX_DEPTH:
            raise ConversionError(f"subgraphs nested deeper than {MAX_DEPTH} at {':'.join(path)}")
        for node in graph.nodes.values():
            subgraph = self._subgraph_for(node)
            inputs = node.inputs if subgraph is None else _instance_inputs(node, subgraph)
            exec_node = ExecNode(_join(path, node.id), node, graph, path, parent, subgraph, inputs)
            self.nodes[exec_node.exec_id] = exec_node
            if len(self.nodes) > MAX_NODES:
                raise ConversionError(f"the workflow expands to more than {MAX_NODES} nodes")
            if subgraph is not None:
                self._add_graph(subgraph.graph, (*path, node.id), exec_node)

    def _subgraph_for(self, node: Node) -> SubgraphDef | None:
        subgraph = self._workflow.subgraphs.get(node.type)
        if subgraph is not None:
            return subgraph
        if node.type.startswith(GROUP_PREFIXES):
            name = node.type.split(">", 1)[-1] if ">" in node.type else node.type.split("/", 1)[-1]
            definition = self._workflow.group_nodes.get(name)
            if definition is not None:
                return expand_group_node(name, definition, node, self._object_info)
        return None

    def _apply_primitives(self) -> None:
        """PrimitiveNodes write their value into every widget they feed (`applyToGraph`)."""
        for exec_node in list(self.nodes.values()):
            node = exec_node.node
            values = node.widgets_values
            if node.type != "PrimitiveNode" or not isinstance(values, list) or not values:
                continue
            if not node.outputs:
                continue
            for link_id in node.outputs[0].links:
                self._push_value(exec_node, link_id, values[0], set())

    def _push_value(self, source: ExecNode, link_id: str, value: Any, seen: set[str]) -> None:
        link = source.graph.links.get(link_id)
        if link is None or link_id in seen:
            return
        seen.add(link_id)
        target = source.graph.nodes.get(link.target_id)
        if target is None:
            return
        target_exec = self.nodes[_join(source.path, target.id)]
        if target.type == "Reroute":
            for next_link in target.outputs[0].links if target.outputs else ():
                self._push_value(target_exec, next_link, value, seen)
            return
        slot = _slot_of_link(target_exec.inputs, link)
        if slot is not None and slot.widget is not None:
            self.overrides.setdefault(target_exec.exec_id, {})[slot.widget] = value

    # -- resolving --------------------------------------------------------------------------

    def emitted(self) -> Iterator[ExecNode]:
        """Nodes that become API nodes, before the check of their classes."""
        for exec_node in self.nodes.values():
            if exec_node.is_virtual or exec_node.node.mode in (MODE_NEVER, MODE_BYPASS):
                continue
            yield exec_node

    def resolve_input(
        self,
        exec_node: ExecNode,
        slot: int,
        visited: set[str] | None = None,
        want: str | None = None,
    ) -> Resolved | None:
        visited = set() if visited is None else visited
        key = f"{exec_node.exec_id}[I]{slot}"
        if key in visited:
            raise ConversionError(f"circular link through input {slot} of node {exec_node.exec_id}")
        visited.add(key)
        if slot >= len(exec_node.inputs):
            return None
        slot_info = exec_node.inputs[slot]
        if slot_info.link is None:
            return None
        link = exec_node.graph.links.get(slot_info.link)
        if link is None:
            raise ConversionError(
                f"node {exec_node.exec_id} input {slot_info.name!r} uses link {slot_info.link}, "
                "which the workflow does not define"
            )
        parent = exec_node.parent
        if parent is not None and link.origin_id == SUBGRAPH_INPUT_ID:
            return self._resolve_from_instance(parent, link.origin_slot, visited)
        origin = exec_node.graph.nodes.get(link.origin_id)
        if origin is None:
            raise ConversionError(
                f"link {link.id} into node {exec_node.exec_id} comes from node {link.origin_id}, "
                "which does not exist"
            )
        origin_exec = self.nodes[_join(exec_node.path, origin.id)]
        return self.resolve_output(origin_exec, link.origin_slot, want or slot_info.type, visited)

    def _resolve_from_instance(
        self, instance: ExecNode, slot: int, visited: set[str]
    ) -> Resolved | None:
        if slot >= len(instance.inputs):
            raise ConversionError(f"subgraph instance {instance.exec_id} has no input {slot}")
        slot_info = instance.inputs[slot]
        if slot_info.link is None:
            return self._promoted_value(instance, slot)
        return self.resolve_input(instance, slot, visited)

    def _promoted_value(self, instance: ExecNode, slot: int) -> Value | None:
        subgraph = instance.subgraph
        slot_info = instance.inputs[slot]
        if subgraph is None or subgraph.legacy_group or slot_info.widget is None:
            return None
        override = self.overrides.get(instance.exec_id, {})
        if slot_info.widget in override:
            return Value(override[slot_info.widget])
        values = instance.node.widgets_values
        if isinstance(values, dict):
            return Value(values[slot_info.name]) if slot_info.name in values else None
        index = sum(1 for earlier in instance.inputs[:slot] if earlier.widget is not None)
        if values is None or index >= len(values):
            return None
        return Value(values[index])

    def resolve_output(
        self, exec_node: ExecNode, slot: int, want: str, visited: set[str]
    ) -> Resolved | None:
        key = f"{exec_node.exec_id}[O]{slot}"
        if key in visited:
            raise ConversionError(
                f"circular link through output {slot} of node {exec_node.exec_id}"
            )
        visited.add(key)
        if exec_node.node.mode == MODE_BYPASS:
            index = self._bypass_slot(exec_node, slot, want)
            return None if index < 0 else self.resolve_input(exec_node, index, visited)
        if exec_node.subgraph is not None:
            return self._resolve_subgraph_output(exec_node, exec_node.subgraph, slot, want, visited)
        if exec_node.is_virtual:
            if slot < len(exec_node.inputs):
                return self.resolve_input(exec_node, slot, visited, want)
            return None
        return Ref(exec_node.exec_id, slot)

    def _resolve_subgraph_output(
        self, instance: ExecNode, subgraph: SubgraphDef, slot: int, want: str, visited: set[str]
    ) -> Resolved | None:
        links = subgraph.graph.links_into(SUBGRAPH_OUTPUT_ID, slot)
        if not links:
            return None
        link = links[0]
        inner_path = (*instance.path, instance.node.id)
        if link.origin_id == SUBGRAPH_INPUT_ID:
            return self._resolve_from_instance(instance, link.origin_slot, visited)
        inner = self.nodes.get(_join(inner_path, link.origin_id))
        if inner is None:
            raise ConversionError(
                f"subgraph {subgraph.name!r} output {slot} comes from node {link.origin_id}, "
                "which does not exist"
            )
        return self.resolve_output(inner, link.origin_slot, want, visited)

    def _bypass_slot(self, exec_node: ExecNode, slot: int, want: str) -> int:
        """Which input a bypassed node passes through to its output `slot` (-1: none)."""
        inputs = exec_node.inputs
        if exec_node.subgraph is not None and exec_node.subgraph.legacy_group:
            candidates: list[int] = [slot, *range(len(inputs))]
            return next((i for i in candidates if i < len(inputs) and inputs[i].type == want), -1)
        if want in ("*", ""):
            return slot if len(inputs) > slot else 0
        outputs = exec_node.node.outputs
        out_type = outputs[slot].type if slot < len(outputs) else "*"
        if slot < len(inputs):
            same = inputs[slot].type
            if types_connect(same, out_type) and types_connect(same, want):
                return slot
        for index, candidate in enumerate(inputs):
            if candidate.type == want:
                return index
        for index, candidate in enumerate(inputs):
            if types_connect(candidate.type, out_type) and types_connect(candidate.type, want):
                return index
        return -1


def types_connect(a: str, b: str) -> bool:
    """LiteGraph's type compatibility: wildcards, case-insensitive names, comma-separated unions."""
    if a in ("", "*", "0") or b in ("", "*", "0"):
        return True
    left, right = a.lower(), b.lower()
    if left == right:
        return True
    if "," not in left and "," not in right:
        return False
    return bool(set(left.split(",")) & set(right.split(",")))
