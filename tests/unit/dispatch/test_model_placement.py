"""Jobs that bring model files go only to backends comfyrun can deliver them to (managed ones);
with none, they fail at once with why (no attempt on a backend that cannot see the cache)."""

from __future__ import annotations

from tests.support.engine import FakeClient, FakeServer, work
from tests.unit.dispatch.conftest import FAST, HEALTH, FakeProcess

from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.core.job import Job, JobStatus, NewJob
from comfyrun.dispatch import Dispatcher
from comfyrun.outputs import open_output_storage
from comfyrun.store.memory import MemoryStore

MODELS = [{"url": "https://h/x.safetensors", "folder": "loras", "name": "x.safetensors"}]


async def run_jobs(
    names: dict[str, bool], jobs: list[NewJob], *, see_cache: frozenset[str] = frozenset()
) -> tuple[list[str | None], list[Job]]:
    """Run `jobs` on a pool of fake backends (name -> managed; `see_cache`: unmanaged ones
    configured to read the model cache); their backends and end states."""
    servers = {name: FakeServer(name=name) for name in names}
    specs = [
        BackendSpec(name=n, managed=object())
        if managed
        else BackendSpec(name=n, url=f"fake://{n}", sees_model_cache=n in see_cache)
        for n, managed in names.items()
    ]
    processes = {n: FakeProcess(servers[n]) for n, managed in names.items() if managed}
    managed_specs = iter(n for n, managed in names.items() if managed)
    pool = BackendPool.from_specs(
        specs,
        lambda url: FakeClient(servers[url.removeprefix("fake://")]),
        process_factory=lambda spec: processes[next(managed_specs)],
        health=HEALTH,
    )
    store = MemoryStore()
    await store.open()
    dispatcher = Dispatcher(store, pool, open_output_storage("memory://"), FAST, worker_id="w")
    await pool.start()
    await dispatcher.start()
    try:
        queued = [(await store.enqueue(job))[0] for job in jobs]
        done = []
        for job in queued:
            after = 0
            while (current := await store.get(job.id)) is not None and not current.terminal:
                events = await store.wait_for_event(job.id, after, 5.0)
                after = events[-1].id if events else after
            assert current is not None
            done.append(current)
        return [j.backend for j in done], done
    finally:
        await dispatcher.stop()
        await pool.stop()
        for server in servers.values():
            await server.stop()
        await store.close()


async def test_jobs_with_models_run_only_on_managed_backends() -> None:
    jobs = [NewJob(workflow=work(0.05), options={"models": MODELS}) for _ in range(4)]
    backends, done = await run_jobs({"u1": False, "m": True, "u2": False}, jobs)
    assert all(j.status is JobStatus.SUCCEEDED for j in done)
    assert backends == ["m"] * 4  # waited for the managed one though the others were idle


async def test_a_job_with_models_and_no_managed_backend_fails_saying_why() -> None:
    plain = NewJob(workflow=work(0.01))
    brings = NewJob(workflow=work(0.01), options={"models": MODELS})
    backends, done = await run_jobs({"u1": False, "u2": False}, [plain, brings])
    assert done[0].status is JobStatus.SUCCEEDED
    failed = done[1]
    assert failed.status is JobStatus.FAILED and failed.attempts == 1
    assert failed.error is not None and failed.error.code == "no_backend_fits"
    assert "model files" in failed.error.message
    assert [b["receives_models"] for b in failed.error.details["backends"]] == [False, False]
    assert backends[1] is None  # never sent to a backend


async def test_an_unmanaged_backend_that_reads_the_cache_takes_jobs_with_models() -> None:
    """A worker beside its ComfyUI: that ComfyUI reads comfyrun's model cache (its extra
    model paths), so jobs bringing models may run there; the other unmanaged one still not."""
    jobs = [NewJob(workflow=work(0.05), options={"models": MODELS}) for _ in range(3)]
    backends, done = await run_jobs(
        {"u1": False, "beside": False}, jobs, see_cache=frozenset({"beside"})
    )
    assert all(j.status is JobStatus.SUCCEEDED for j in done), [j.error for j in done]
    assert backends == ["beside"] * 3
