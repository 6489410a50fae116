"""The dispatcher's side of staging (dispatch.staging), mixed into the Dispatcher: a claim
takes a job that must download first only while the staging set has room for it; such a job
gives its slot back and downloads with no backend held; once its files are in it is parked, so
that it takes the next free slot before any new claim."""

from __future__ import annotations

from abc import abstractmethod

from comfyrun.backends.pool import Slot
from comfyrun.core.job import Job
from comfyrun.dispatch.claim_wake import ClaimWake
from comfyrun.dispatch.parts import DispatcherParts
from comfyrun.dispatch.run_context import RunContext
from comfyrun.dispatch.staging import Staging
from comfyrun.models import ModelCache
from comfyrun.store.base import ClaimChoice


class StagingClaims(DispatcherParts):
    """Claims and staging (the Dispatcher sets these)."""

    #: None: no model cache (a job's files, if any, download inside its run).
    staging: Staging | None
    _wake: ClaimWake
    _nothing_at: int | None
    ctx: RunContext

    @abstractmethod
    async def _claim_for(self, slot: Slot, token: int | None, *, downloads: bool) -> None:
        """Claim a job for `slot` and start it; with `downloads` False, none that must download
        model files first."""

    def _staging_for(self, models: ModelCache | None) -> Staging | None:
        """The staging set of jobs whose files download with no backend held (None without
        a model cache)."""
        if models is None:
            return None
        return Staging(models, self.ctx, staged=self._staged, changed=self._staging_changed)

    async def _claim_once(self, slot: Slot, token: int | None) -> None:
        """Claim a job for `slot`: one that must download first only while the staging set
        has room for it (a place kept for this claim until it started its job)."""
        staging = self.staging
        promised = staging is None or staging.promise()
        try:
            await self._claim_for(slot, token, downloads=promised)
        finally:
            if staging is not None and promised:
                staging.unpromise()

    def _claim_choice(self, slot: Slot, downloads: bool) -> ClaimChoice | None:
        """The claim's choice for `slot`: model-aware routing's, and without `downloads` none
        that must download first."""
        choice = self.router.choice(slot.backend.name)
        if downloads or self.staging is None:
            return choice
        return self.staging.without_downloads(choice, self.router.window)

    def _stage(self, job: Job, slot: Slot) -> bool:
        """Stage `job`, just claimed for `slot`, when its files must download first and it can
        run here once they are in (one that never can fails at once, unstaged): the slot is
        given back and claimed for again. False: it is placed as it is."""
        staging = self.staging
        if (
            staging is None
            or not staging.needs(job)
            or self.fit.misfits(job) is not None
            or not staging.take(job, slot.backend.name)
        ):
            return False
        slot.release()
        self._wake.nudge()  # (an unused slot given back wakes nobody)
        return True

    def _staged(self, job: Job) -> None:
        """A staging job has its files: parked, it takes a free slot before new claims."""
        self._parked[job.id] = job

    def _staging_changed(self) -> None:
        """A place in the staging set freed, or a job in it is ready: claims look again."""
        self._nothing_at = None
        self._wake.nudge()

    def _staging_holds(self, job_id: str) -> bool:
        return self.staging is not None and job_id in self.staging


__all__ = ["StagingClaims"]
