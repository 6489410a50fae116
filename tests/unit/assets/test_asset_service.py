"""The asset service on the in-memory storage: dedup, hashes, minting, lookups."""

from __future__ import annotations

import pytest
from tests.support.media import blake3_of, chunked, collect, pattern

from comfyrun.assets import AssetService
from comfyrun.assets.service import blob_key, meta_key
from comfyrun.errors import BlobNotFound, HashMismatch, InputRejected, InvalidRequest, NotFound
from comfyrun.outputs import iterate_bytes, output_key
from comfyrun.outputs.memory import MemoryOutputStorage


def service(max_upload_bytes: int = 1 << 30) -> tuple[AssetService, MemoryOutputStorage]:
    storage = MemoryOutputStorage()
    clock = lambda: 1_700_000_000.0  # noqa: E731
    return AssetService(storage, max_upload_bytes=max_upload_bytes, clock=clock), storage


async def test_upload_stores_the_blob_once_and_mints_an_asset() -> None:
    assets, _ = service()
    data = pattern(300_000)
    first, new = await assets.upload(
        chunked(data),
        content_type="image/png",
        file_path="photo.png",
        tags=["input", "input", " x "],
    )
    assert new is True
    assert first.hash == blake3_of(data) and first.size_bytes == len(data)
    assert (first.file_path, first.tags, first.created_at) == (
        "photo.png",
        ("input", "x"),
        1_700_000_000.0,
    )
    second, new_again = await assets.upload(
        iterate_bytes(data), content_type="image/png", file_path="b.png"
    )
    assert new_again is False
    assert second.id != first.id and second.storage_key == first.storage_key == blob_key(first.hash)
    assert await collect(assets.open_content(second)) == data
    assert await assets.get(first.id) == first


async def test_expected_hash_is_verified_and_a_mismatch_stores_nothing() -> None:
    assets, storage = service()
    data = b"some bytes"
    ok, _ = await assets.upload(
        iterate_bytes(data),
        content_type="image/png",
        expected_hash=blake3_of(data).upper().replace("BLAKE3", "blake3"),
    )
    assert ok.hash == blake3_of(data)
    other = pattern(50)
    with pytest.raises(HashMismatch) as caught:
        await assets.upload(
            iterate_bytes(other), content_type="image/png", expected_hash=blake3_of(b"nope")
        )
    assert caught.value.code == "hash_mismatch"
    assert caught.value.details == {
        "expected_hash": blake3_of(b"nope"),
        "actual_hash": blake3_of(other),
    }
    assert await storage.stat(blob_key(blake3_of(other))) is None


async def test_malformed_hashes_are_invalid_requests() -> None:
    assets, _ = service()
    for bad in ("sha256:00", "blake3:xyz", "blake3:" + "0" * 63):
        with pytest.raises(InvalidRequest):
            await assets.upload(iterate_bytes(b"x"), content_type="image/png", expected_hash=bad)
        with pytest.raises(InvalidRequest):
            await assets.from_hash(bad)
        assert await assets.exists(bad) is False


async def test_upload_size_limit() -> None:
    assets, storage = service(max_upload_bytes=1000)
    await assets.upload(iterate_bytes(b"x" * 1000), content_type="image/png")
    with pytest.raises(InputRejected) as caught:
        await assets.upload(iterate_bytes(b"y" * 1001), content_type="image/png")
    assert caught.value.details["reason"] == "file_too_large"
    assert await storage.stat(blob_key(blake3_of(b"y" * 1001))) is None


async def test_from_hash_and_exists() -> None:
    assets, _ = service()
    data = pattern(1000)
    digest = blake3_of(data)
    assert await assets.exists(digest) is False
    with pytest.raises(BlobNotFound) as caught:
        await assets.from_hash(digest)
    assert caught.value.code == "blob_not_found"
    original, _ = await assets.upload(iterate_bytes(data), content_type="audio/wav")
    assert await assets.exists(digest) is True
    minted = await assets.from_hash(digest, file_path="voice.wav", tags=["x"])
    assert minted.id != original.id
    assert (minted.hash, minted.size_bytes, minted.content_type) == (digest, 1000, "audio/wav")
    assert minted.file_path == "voice.wav"


async def test_unknown_and_unsafe_ids_are_not_found() -> None:
    assets, _ = service()
    for asset_id in ("does-not-exist", "../../etc/passwd", "a/b", ""):
        with pytest.raises(NotFound):
            await assets.get(asset_id)


async def test_bad_metadata_is_refused() -> None:
    assets, _ = service()
    with pytest.raises(InvalidRequest):
        await assets.upload(iterate_bytes(b"x"), content_type="not a mime type")
    with pytest.raises(InvalidRequest):
        await assets.upload(iterate_bytes(b"x"), content_type="image/png", file_path="../evil.png")
    with pytest.raises(InvalidRequest):
        await assets.upload(
            iterate_bytes(b"x"),
            content_type="image/png",
            tags=["t"] * 0 + [f"t{i}" for i in range(40)],
        )


async def test_delete_forgets_the_record_but_keeps_shared_bytes() -> None:
    assets, storage = service()
    a, _ = await assets.upload(iterate_bytes(b"shared"), content_type="image/png")
    b, _ = await assets.upload(iterate_bytes(b"shared"), content_type="image/png")
    await assets.delete(a.id)
    with pytest.raises(NotFound):
        await assets.get(a.id)
    assert await storage.stat(meta_key(a.id)) is None
    assert await collect(assets.open_content(await assets.get(b.id))) == b"shared"


async def test_a_job_output_becomes_an_asset_without_a_copy_and_ends_with_the_job() -> None:
    assets, storage = service()
    key = output_key("job-1", "9", "ComfyUI_00001_.png")
    stored = await storage.put(key, iterate_bytes(b"png"), content_type="image/png")
    asset = await assets.register_output(stored, job_id="job-1", file_path="ComfyUI_00001_.png")
    assert (asset.storage_key, asset.job_id, asset.hash) == (key, "job-1", stored.hash)
    assert await collect(assets.open_content(await assets.get(asset.id))) == b"png"
    await storage.delete_prefix("job-1/")
    with pytest.raises(NotFound):
        await assets.get(asset.id)


async def test_url_is_none_on_storage_without_links() -> None:
    assets, _ = service()
    a, _ = await assets.upload(iterate_bytes(b"x"), content_type="image/png", file_path="d/p.png")
    assert await assets.url(a) == (None, None)
