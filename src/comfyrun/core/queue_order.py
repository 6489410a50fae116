"""Queue order within one priority and fair tag: first come first served, or longest first with
aging. Pure.

Rules:
- Claim order is (priority, fair tag, `rank_at`, id). Priorities hold strictly and fair groups
  keep alternating (core.batch); `rank_at` orders only jobs of one priority and one fair tag:
  the ungrouped jobs, and the next job of each group. Within one group, jobs stay FIFO (each
  has its own tag).
- `fifo`: `rank_at` is the submission time.
- `longest_first`: a job ranks as if submitted up to `aging_s` earlier than it was, the more
  the longer it is estimated to run (`head_start`: aging_s * cost / (cost + REFERENCE_COST)).
  So of jobs waiting together the longest starts first (longest-processing-time-first, which
  keeps a fleet's makespan close to the best), while no job is ever overtaken by one submitted
  more than `aging_s` after it: nothing starves.
- A job's cost is estimated from its workflow (`estimate_cost`): sampler steps times latent
  pixels (in units of 512x512) times the latent batch, summed over the sampler nodes. A job
  whose cost cannot be read (no sampler node, steps from a link, a UI-format workflow) counts
  as REFERENCE_COST (20 steps of one 512x512 image).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class QueueOrder(enum.StrEnum):
    FIFO = "fifo"
    LONGEST_FIRST = "longest_first"


#: The cost of 20 sampler steps on one 512x512 image: the unit a head start is scaled by.
REFERENCE_COST = 20.0
#: Pixels of one 512x512 image: the unit of resolution in a cost.
REFERENCE_PIXELS = 512 * 512
#: Steps assumed when a sampler's steps are not a literal number.
DEFAULT_STEPS = 20
#: Links followed from a sampler to the node that sets its latent's size.
MAX_DEPTH = 16

#: Sampler nodes whose `steps` input counts (KSamplerAdvanced: from start_at_step to end_at_step).
_STEP_SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced"})
#: Sampler nodes whose steps come from a sigmas input (a scheduler node with `steps`).
_SIGMA_SAMPLERS = frozenset({"SamplerCustom", "SamplerCustomAdvanced"})
#: Inputs that carry a latent (or the image a latent is encoded from) towards a sampler.
_LATENT_INPUTS = ("latent_image", "latent", "samples", "pixels", "image", "images")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _node(workflow: Mapping[str, Any], link: Any) -> Mapping[str, Any] | None:
    """The node a link (["id", slot]) points to."""
    if isinstance(link, list) and len(link) == 2 and isinstance(link[0], str | int):
        node = workflow.get(str(link[0]))
        return node if isinstance(node, Mapping) else None
    return None


def _inputs(node: Mapping[str, Any]) -> Mapping[str, Any]:
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, Mapping) else {}


def _steps(workflow: Mapping[str, Any], node: Mapping[str, Any]) -> float:
    inputs = _inputs(node)
    if node.get("class_type") in _SIGMA_SAMPLERS:
        scheduler = _node(workflow, inputs.get("sigmas"))
        inputs = _inputs(scheduler) if scheduler is not None else {}
    steps = _number(inputs.get("steps"))
    if steps is None:
        return float(DEFAULT_STEPS)
    if node.get("class_type") == "KSamplerAdvanced":
        start = _number(inputs.get("start_at_step")) or 0.0
        end = _number(inputs.get("end_at_step"))
        steps = (min(steps, end) if end is not None else steps) - start
    return max(0.0, steps)


def _latent_size(workflow: Mapping[str, Any], node: Mapping[str, Any]) -> float:
    """The latent's pixels x batch, in units of 512x512, found by following latent links back
    to a node that sets width and height (1 when none does)."""
    current: Mapping[str, Any] | None = node
    for _ in range(MAX_DEPTH):
        if current is None:
            break
        inputs = _inputs(current)
        width, height = _number(inputs.get("width")), _number(inputs.get("height"))
        if current is not node and width is not None and height is not None:
            batch = _number(inputs.get("batch_size")) or 1.0
            length = _number(inputs.get("length")) or 1.0
            return max(width * height / REFERENCE_PIXELS, 1e-3) * max(batch, 1.0) * length
        nxt = None
        for name in _LATENT_INPUTS:
            nxt = _node(workflow, inputs.get(name))
            if nxt is not None:
                break
        current = nxt
    return 1.0


def estimate_cost(workflow: Any) -> float | None:
    """The estimated cost of an API-format workflow (see the module's rules), or None when it
    cannot be read (no sampler node)."""
    if not isinstance(workflow, Mapping):
        return None
    total = 0.0
    found = False
    for node in workflow.values():
        if not isinstance(node, Mapping):
            continue
        kind = node.get("class_type")
        if kind not in _STEP_SAMPLERS and kind not in _SIGMA_SAMPLERS:
            continue
        found = True
        total += _steps(workflow, node) * _latent_size(workflow, node)
    return total if found else None


def head_start(cost: float | None, order: QueueOrder, aging_s: float) -> float:
    """How many seconds earlier than its submission a job of `cost` ranks (0 under FIFO)."""
    if order is QueueOrder.FIFO or aging_s <= 0:
        return 0.0
    c = REFERENCE_COST if cost is None else max(0.0, cost)
    return aging_s * c / (c + REFERENCE_COST)


__all__ = [
    "DEFAULT_STEPS",
    "REFERENCE_COST",
    "QueueOrder",
    "estimate_cost",
    "head_start",
]
