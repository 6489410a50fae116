"""Admitting a job by its type at submission: the checks the API makes before queueing.

A comfy job (the default) is admitted as before; its chain (`then`), if any, is checked. A job
of another type must name a type some live worker serves (workers announce their types to the
store on every heartbeat) unless `queue_unserved` is set, and its params must pass the check of
its handler, when this process has that handler. A refusal is a 422: UnservedJobType, or
InvalidParams naming the bad param or chain step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from comfyrun.core.job import COMFY, JSON
from comfyrun.errors import InvalidParams, UnservedJobType
from comfyrun.handlers.registry import HandlerRegistry
from comfyrun.handlers.spec import check_type_name, parse_chain, valid_type_name
from comfyrun.store.base import WorkerRegistry

#: A worker not seen for this many heartbeats no longer counts as serving its types.
MISSED_HEARTBEATS = 3


class JobTypes:
    """What the API knows of job types: its own handlers (for their params checks) and, through
    the store, which types live workers serve."""

    def __init__(
        self,
        registry: HandlerRegistry | None = None,
        *,
        queue_unserved: bool = False,
        heartbeat_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry or HandlerRegistry.load(entry_points=False)
        self.queue_unserved = queue_unserved
        self.fresh_s = MISSED_HEARTBEATS * heartbeat_s + 5.0
        self._clock = clock

    async def admit(
        self, workers: WorkerRegistry, type_: str, params: Mapping[str, Any], options: JSON
    ) -> tuple[JSON, JSON]:
        """(params, options) to store for a job of `type_`, with its chain normalised; raises
        UnservedJobType or InvalidParams."""
        check_type_name(type_)
        steps = parse_chain(options.get("then"))
        needed = ([type_] if type_ != COMFY else []) + [s.type for s in steps]
        if type_ == COMFY and params:
            raise InvalidParams("a comfy job takes a `workflow`, not `params`")
        if needed and not self.queue_unserved:
            served = await workers.served_types(since=self._clock() - self.fresh_s)
            missing = [t for t in dict.fromkeys(needed) if t not in served]
            if missing:
                raise UnservedJobType(
                    f"no worker serves job type {missing[0]!r} "
                    f"(served now: {', '.join(sorted(served)) or 'none'})",
                    details={"type": missing[0], "served": sorted(served)},
                )
        params = self._checked(type_, dict(params), where=None) if type_ != COMFY else {}
        if steps:
            options = {
                **options,
                "then": [
                    {**s.to_json(), "params": self._checked(s.type, dict(s.params), where=i)}
                    for i, s in enumerate(steps)
                ],
            }
        return dict(params), options

    async def known(self, workers: WorkerRegistry, type_: str) -> bool:
        """Whether `type_` names a job type other than comfy that this process has a handler
        for or a live worker serves (a name a dialect may take for one, e.g. RunPod's
        endpoint id)."""
        if type_ == COMFY or not valid_type_name(type_):
            return False
        if self.registry.get(type_) is not None:
            return True
        return type_ in await workers.served_types(since=self._clock() - self.fresh_s)

    def _checked(self, type_: str, params: JSON, *, where: int | None) -> JSON:
        handler = self.registry.get(type_)
        if handler is None or handler.check_params is None:
            return params
        try:
            try:
                return handler.check_params(params)
            except (ValueError, TypeError) as exc:  # a plug-in's own check
                raise InvalidParams(f"{type_}: {exc}") from None
        except InvalidParams as exc:
            if where is None:
                raise
            details = exc.details if isinstance(exc.details, dict) else {}
            raise InvalidParams(
                f"chain step {where}: {exc.message}", details={**details, "step": where}
            ) from None


__all__ = ["MISSED_HEARTBEATS", "JobTypes"]
