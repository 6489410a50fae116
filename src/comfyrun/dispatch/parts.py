"""What the Dispatcher's parts (dispatch.placing, dispatch.rebalance) read of it: the state the
Dispatcher (dispatch.dispatcher) sets, and how it starts a run."""

from __future__ import annotations

from abc import ABC, abstractmethod

from comfyrun.backends.pool import BackendPool, Slot
from comfyrun.core.job import Job
from comfyrun.dispatch.fitting import FleetFit
from comfyrun.dispatch.routing import ModelRouter
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.store.base import JobStore


class DispatcherParts(ABC):
    """The Dispatcher's state its mixed-in parts share (the Dispatcher sets these)."""

    settings: DispatchSettings
    types: tuple[str, ...]
    worker_id: str
    store: JobStore
    pool: BackendPool
    fit: FleetFit
    router: ModelRouter
    #: Claimed jobs that fit only backends that are busy now, placed first when one frees.
    _parked: dict[str, Job]
    #: The slots reserved for the claims in flight (their jobs not known yet).
    _claiming: set[Slot]

    @abstractmethod
    def _start_run(
        self,
        job: Job,
        slot: Slot,
        *,
        noted_prompt: str | None = None,
        claimed: int | None = None,
    ) -> None:
        """Run `job` on the slot's backend."""


__all__ = ["DispatcherParts"]
