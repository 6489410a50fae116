"""Follows one prompt through its websocket events; pure, no I/O, no asyncio.

Theory of operation. A tracker starts QUEUED. Any execution event for its prompt moves it to
RUNNING (the `execution_start` may have been missed across a reconnect). `execution_success`,
`execution_error` and `execution_interrupted` fix the outcome; `executing` with node=None is the
last message ComfyUI sends for a prompt and sets `finished`. Only then is the prompt's history
written, so a finished tracker whose outcome is still unknown (the terminal event was missed)
must be settled from history (`apply_history`). Once the outcome is fixed, later execution
events change nothing. A prompt that the caller finds neither queued, running nor in history is
marked LOST.

A prompt is settled (its result told) as soon as it is `terminal`, not at `executing` null:
ComfyUI sends `execution_success` once every node has run, after each output node's `executed`
(so the outputs are all here), `execution_error` / `execution_interrupted` as the prompt stops,
and what it does before `executing` null (its history written, with --disable-smart-memory
every model unloaded first, a `status`) changes nothing of the result.

    QUEUED --execution event--> RUNNING --success/error/interrupted--> SUCCESS/ERROR/INTERRUPTED
    any non-terminal --mark_lost--> LOST ; any non-terminal --apply_history--> outcome
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from comfyrun.comfy.history import HistoryEntry
from comfyrun.comfy.messages import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Message,
    NodeProgress,
    Progress,
    ProgressState,
    TextMessage,
)

JSON = dict[str, object]


class PromptState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    LOST = "lost"


TERMINAL_STATES = frozenset(
    {PromptState.SUCCESS, PromptState.ERROR, PromptState.INTERRUPTED, PromptState.LOST}
)

_LIFECYCLE = (
    ExecutionStart,
    ExecutionCached,
    ExecutionSuccess,
    ExecutionError,
    ExecutionInterrupted,
)


class PromptTracker:
    """The state of one prompt, fed with its messages in order.

    `node_ids`, when given (the prompt's node ids), lets `fraction` estimate overall progress.
    """

    def __init__(self, prompt_id: str, *, node_ids: Iterable[str] | None = None) -> None:
        self.prompt_id = prompt_id
        self.node_ids: frozenset[str] | None = frozenset(node_ids) if node_ids else None
        self.state = PromptState.QUEUED
        self.finished = False
        self.cached_nodes: tuple[str, ...] = ()
        self.completed_nodes: set[str] = set()
        self.current_node: str | None = None
        self.node_progress: dict[str, NodeProgress] = {}
        self.step: Progress | None = None
        self.outputs: dict[str, JSON] = {}
        self.error: ExecutionError | None = None
        self.interruption: ExecutionInterrupted | None = None
        #: Lifecycle events (start, cached, success/error/interrupted), like history's messages.
        self.messages: list[TextMessage] = []

    @property
    def terminal(self) -> bool:
        """The outcome is known (and can be told: see the module), whether or not ComfyUI has
        finished the prompt yet."""
        return self.state in TERMINAL_STATES

    @property
    def done(self) -> bool:
        """Nothing more will happen: the outcome is known and ComfyUI has finished the prompt."""
        return self.terminal and (self.finished or self.state is PromptState.LOST)

    def feed(self, message: Message) -> bool:
        """Apply one message; True when it concerned this prompt."""
        if isinstance(message, Executing) and message.prompt_id is None:
            return self._legacy_executing(message)
        if message.prompt_id != self.prompt_id:
            return False
        if isinstance(message, Executing) and message.node is None:
            self.finished = True
            self.current_node = None
            return True
        if self.terminal:
            return True
        if self.state is PromptState.QUEUED:
            self.state = PromptState.RUNNING
        if isinstance(message, _LIFECYCLE):
            self.messages.append(message)
        self._apply(message)
        return True

    def _legacy_executing(self, message: Executing) -> bool:
        # Sent on reconnect during a run, without prompt_id; the caller routes it here only
        # when this prompt is the one running.
        if self.state is not PromptState.RUNNING or message.node is None:
            return False
        self._enter_node(message.node)
        return True

    def _apply(self, message: Message) -> None:
        match message:
            case ExecutionCached(nodes=nodes):
                self.cached_nodes = nodes
            case Executing(node=str(node)):
                self._enter_node(node)
            case Progress():
                self.step = message
            case ProgressState(nodes=nodes):
                self.node_progress = dict(nodes)
                self.completed_nodes.update(n for n, p in nodes.items() if p.state == "finished")
            case Executed(node=node, output=output):
                self.outputs[node] = dict(output)
                self.completed_nodes.add(node)
            case ExecutionSuccess():
                self.state = PromptState.SUCCESS
            case ExecutionError():
                self.state = PromptState.ERROR
                self.error = message
            case ExecutionInterrupted():
                self.state = PromptState.INTERRUPTED
                self.interruption = message
            case _:
                pass

    def _enter_node(self, node: str) -> None:
        if self.current_node is not None and self.current_node != node:
            self.completed_nodes.add(self.current_node)
        self.current_node = node
        self.step = None

    def apply_history(self, entry: HistoryEntry) -> None:
        """Settle the prompt from its history entry (authoritative once written)."""
        self.finished = True
        self.current_node = None
        self.outputs = {k: dict(v) for k, v in entry.raw_outputs.items() if isinstance(v, dict)}
        self.cached_nodes = entry.cached_nodes or self.cached_nodes
        self.messages = [m for m in entry.messages if isinstance(m, _LIFECYCLE)]
        self.error = entry.error
        self.interruption = entry.interrupted
        self.state = PromptState(entry.outcome)

    def mark_lost(self) -> None:
        if not self.terminal:
            self.state = PromptState.LOST

    @property
    def fraction(self) -> float | None:
        """Overall progress in [0, 1], when the prompt's node ids are known."""
        if self.state is PromptState.SUCCESS:
            return 1.0
        if not self.node_ids:
            return None
        done = (self.completed_nodes | set(self.cached_nodes)) & self.node_ids
        partial = 0.0
        node = self.current_node
        if node is not None and node not in done and node in self.node_ids:
            if self.step is not None and self.step.max > 0:
                partial = min(1.0, self.step.value / self.step.max)
            elif node in self.node_progress and self.node_progress[node].max > 0:
                p = self.node_progress[node]
                partial = min(1.0, p.value / p.max)
        return min(1.0, (len(done) + partial) / len(self.node_ids))


__all__ = ["TERMINAL_STATES", "PromptState", "PromptTracker"]
