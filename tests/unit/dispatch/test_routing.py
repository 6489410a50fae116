"""The model router's memory of what each backend holds (dispatch.routing)."""

from __future__ import annotations

from comfyrun.core.job import Job
from comfyrun.core.placement import BackendState, BackendView
from comfyrun.dispatch.routing import ModelRouter


def job_loading(checkpoint: str) -> Job:
    workflow = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}}}
    return Job(id=f"job-{checkpoint}", workflow=workflow)


def test_a_backend_that_went_down_holds_nothing_and_the_others_keep_theirs() -> None:
    router = ModelRouter()
    router.sent("a", job_loading("sd15.safetensors"))
    router.sent("b", job_loading("sdxl.safetensors"))
    assert router.held("a") and router.held("b")
    router.forget_down(
        lambda: [BackendView("a", BackendState.CRASHED), BackendView("b", BackendState.BUSY)]
    )
    assert router.held("a") == () and router.held("b") == ("checkpoints/sdxl.safetensors",)


def test_with_nothing_held_the_pool_is_not_asked_for_its_views() -> None:
    router = ModelRouter()
    asked: list[int] = []

    def views() -> list[BackendView]:
        asked.append(1)
        return [BackendView("a", BackendState.CRASHED)]

    router.forget_down(views)
    assert asked == []
    router.sent("a", job_loading("sd15.safetensors"))
    router.forget_down(views)
    assert asked == [1] and router.held("a") == ()
