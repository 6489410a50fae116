"""Every store: backends' node catalogs are kept per backend, exactly, newest fetch wins."""

from __future__ import annotations

from comfyrun.core.catalog import NodeCatalog
from comfyrun.store.base import JobStore

T0 = 1_700_000_000.0


def catalog(
    backend: str, fetched_at: float = T0, ckpts: tuple[str, ...] = ("a.ckpt",)
) -> NodeCatalog:
    # keys deliberately out of alphabetical order: ComfyUI's order must survive the store
    info = {
        "KSampler": {"input": {"required": {"seed": ["INT", {"default": 0}], "cfg": ["FLOAT"]}}},
        "CheckpointLoaderSimple": {
            "input": {"required": {"ckpt_name": [list(ckpts), {"tooltip": "é ✓"}]}}
        },
    }
    return NodeCatalog(
        backend=backend,
        object_info=info,
        fetched_at=fetched_at,
        comfyui_version="0.3.64",
        models={"checkpoints": list(ckpts), "vae": []},
        embeddings=["easynegative"],
        features={"supports_preview_metadata": True, "max_upload_size": 104857600},
    )


async def test_a_catalog_round_trips_with_its_key_order(store: JobStore) -> None:
    assert await store.catalogs() == []
    assert await store.catalog_stamps() == {}
    stored = catalog("gpu-1")
    assert await store.put_catalog(stored)
    [back] = await store.catalogs()
    assert back == stored
    assert list(back.object_info) == ["KSampler", "CheckpointLoaderSimple"]
    assert list(back.object_info["KSampler"]["input"]["required"]) == ["seed", "cfg"]
    assert await store.catalog_stamps() == {"gpu-1": T0}


async def test_one_catalog_per_backend_and_a_later_fetch_replaces_it(store: JobStore) -> None:
    await store.put_catalog(catalog("b", T0))
    await store.put_catalog(catalog("a", T0))
    assert await store.put_catalog(catalog("b", T0 + 5, ckpts=("a.ckpt", "new.ckpt")))
    by_name = {c.backend: c for c in await store.catalogs()}
    assert sorted(by_name) == ["a", "b"]
    assert by_name["b"].models["checkpoints"] == ["a.ckpt", "new.ckpt"]
    assert by_name["a"].models["checkpoints"] == ["a.ckpt"]
    assert await store.catalog_stamps() == {"a": T0, "b": T0 + 5}


async def test_an_older_fetch_does_not_overwrite_a_newer_one(store: JobStore) -> None:
    await store.put_catalog(catalog("a", T0 + 10, ckpts=("new.ckpt",)))
    assert not await store.put_catalog(catalog("a", T0, ckpts=("old.ckpt",)))
    [kept] = await store.catalogs()
    assert kept.fetched_at == T0 + 10 and kept.models["checkpoints"] == ["new.ckpt"]


async def test_a_catalog_can_be_deleted(store: JobStore) -> None:
    await store.put_catalog(catalog("a"))
    assert await store.delete_catalog("a")
    assert not await store.delete_catalog("a")
    assert await store.catalogs() == []
