"""Fault injection: settings the emulator consults while it serves and executes.

One mutable `Faults` object per emulator (`emu.faults`), changed directly in tests, by
`--fault SPEC` flags, or over HTTP (`POST /emulator/faults`). Specs:

    slow:SECONDS                 extra seconds before every node and every sampler step
    fail:CLASS_TYPE[:message]    nodes of that class raise RuntimeError at run time
    fail-node:NODE_ID[:message]  that node id raises at run time
    oom:CLASS_TYPE               raise a torch.OutOfMemoryError look-alike
    exit:CLASS_TYPE[:code]       the process exits (os._exit) when such a node starts
    drop-ws:CLASS_TYPE           close every websocket when such a node starts
    hang                         prompts stop at their next node until interrupted or the
                                 fault is cleared (`hang = False`, `clear()`)
    http500:PATH[:count]         the next `count` (default 1) requests to PATH answer 500
    freeze                       the server stops as a SIGSTOPped ComfyUI does: HTTP requests
                                 wait unanswered, the running prompt and its websocket messages
                                 pause, until the fault is cleared (`frozen = False`, `clear()`);
                                 /emulator/* still answers (to thaw it)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OOM_TYPE = "torch.OutOfMemoryError"
#: How often a frozen emulator looks whether it was thawed (the `freeze` fault).
FROZEN_POLL_S = 0.02
OOM_MESSAGE = (
    "Allocation on device 0 would exceed allowed memory. (out of memory)\n"
    "Currently allocated     : 22.61 GiB\n"
    "Requested               : 3.00 GiB\n"
    "Device limit            : 23.55 GiB\n"
    "Free (according to CUDA): 19.94 MiB\n"
    "PyTorch limit (set by user-supplied memory fraction)\n"
    "                        : 17179869184.00 GiB"
)


@dataclass
class NodeFault:
    """What an injected node failure raises: ComfyUI reports `exception_type` verbatim."""

    exception_type: str = "RuntimeError"
    message: str = "injected fault"

    @classmethod
    def oom(cls) -> NodeFault:
        return cls(OOM_TYPE, OOM_MESSAGE)


@dataclass
class Faults:
    """Mutable fault settings; every field's default means 'behave like ComfyUI'."""

    delay_s: float = 0.0
    fail_class_types: dict[str, NodeFault] = field(default_factory=dict)
    fail_node_ids: dict[str, NodeFault] = field(default_factory=dict)
    exit_class_types: dict[str, int] = field(default_factory=dict)
    drop_ws_class_types: set[str] = field(default_factory=set)
    hang: bool = False
    http_500: dict[str, int] = field(default_factory=dict)
    frozen: bool = False

    def clear(self) -> None:
        """Back to no faults at all."""
        fresh = Faults()
        for name in fresh.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def node_fault(self, node_id: str, class_type: str) -> NodeFault | None:
        return self.fail_node_ids.get(node_id) or self.fail_class_types.get(class_type)

    def take_http_500(self, path: str) -> bool:
        """True (and one fewer left) if the next request to `path` must fail."""
        for key in (path, path.removeprefix("/api")):
            left = self.http_500.get(key, 0)
            if left > 0:
                if left == 1:
                    del self.http_500[key]
                else:
                    self.http_500[key] = left - 1
                return True
        return False

    def apply_spec(self, spec: str) -> None:
        """Apply one `--fault` spec (see the module docstring); ValueError if malformed."""
        kind, _, rest = spec.partition(":")
        if kind == "slow":
            self.delay_s = float(rest)
        elif kind in ("fail", "fail-node"):
            target, _, message = rest.partition(":")
            if not target:
                raise ValueError(f"fault {spec!r}: missing target")
            fault = NodeFault(message=message or "injected fault")
            (self.fail_class_types if kind == "fail" else self.fail_node_ids)[target] = fault
        elif kind == "oom":
            if not rest:
                raise ValueError(f"fault {spec!r}: missing class type")
            self.fail_class_types[rest] = NodeFault.oom()
        elif kind == "exit":
            target, _, code = rest.partition(":")
            if not target:
                raise ValueError(f"fault {spec!r}: missing class type")
            self.exit_class_types[target] = int(code or "1")
        elif kind == "drop-ws":
            if not rest:
                raise ValueError(f"fault {spec!r}: missing class type")
            self.drop_ws_class_types.add(rest)
        elif kind == "hang":
            self.hang = True
        elif kind == "freeze":
            self.frozen = True
        elif kind == "http500":
            path, _, count = rest.partition(":")
            if not path.startswith("/"):
                raise ValueError(f"fault {spec!r}: path must start with /")
            self.http_500[path] = int(count or "1")
        else:
            raise ValueError(f"unknown fault kind {kind!r} in {spec!r}")

    def apply_json(self, body: dict[str, Any]) -> None:
        """Apply a POST /emulator/faults body: {"clear": bool, "specs": [spec, ...]} plus
        direct fields ({"delay_s": 0.5, "hang": true, "http_500": {"/prompt": 2}, ...})."""
        if body.get("clear"):
            self.clear()
        for spec in body.get("specs", []):
            self.apply_spec(str(spec))
        if "delay_s" in body:
            self.delay_s = float(body["delay_s"])
        if "hang" in body:
            self.hang = bool(body["hang"])
        if "frozen" in body:
            self.frozen = bool(body["frozen"])
        for path, count in dict(body.get("http_500", {})).items():
            self.http_500[str(path)] = int(count)
        for key, raw in dict(body.get("fail_class_types", {})).items():
            self.fail_class_types[str(key)] = NodeFault(**dict(raw))
        for key, raw in dict(body.get("fail_node_ids", {})).items():
            self.fail_node_ids[str(key)] = NodeFault(**dict(raw))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["drop_ws_class_types"] = sorted(self.drop_ws_class_types)
        return data
