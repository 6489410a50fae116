"""S3 output storage against a real S3-compatible server over HTTP: multipart streaming,
presigned URLs fetched with httpx, clean-up, configuration by URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.support.media import blake3_of, collect, generated, new_bucket, pattern

from comfyrun.outputs import job_prefix, open_output_storage, output_key
from comfyrun.outputs.s3 import MIN_PART_SIZE, S3OutputStorage


def storage_in(s3: Any, bucket: str, prefix: str = "out", **kwargs: Any) -> S3OutputStorage:
    return S3OutputStorage(bucket, prefix, part_size=MIN_PART_SIZE, client=s3, **kwargs)


async def test_large_stream_goes_up_in_parts(s3: Any) -> None:
    bucket = new_bucket(s3)
    storage = storage_in(s3, bucket)
    size = 2 * MIN_PART_SIZE + 12345  # three parts, the last one short
    stored = await storage.put(
        "job/9/big.mp4", generated(size, 64 * 1024), content_type="video/mp4"
    )
    expected = b"".join([c async for c in generated(size, 64 * 1024)])
    assert stored.size_bytes == size
    assert stored.hash == blake3_of(expected)
    head = s3.head_object(Bucket=bucket, Key="out/job/9/big.mp4")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of 3 parts
    assert head["ContentType"] == "video/mp4"
    assert await collect(storage.open("job/9/big.mp4")) == expected
    stat = await storage.stat("job/9/big.mp4")
    assert stat is not None and stat.size_bytes == size and stat.hash is None


async def test_small_object_is_one_put_with_its_hash(s3: Any) -> None:
    bucket = new_bucket(s3)
    storage = storage_in(s3, bucket)
    data = pattern(1000)
    await storage.put("job/9/a.png", generated(1000, 100), content_type="image/png")
    head = s3.head_object(Bucket=bucket, Key="out/job/9/a.png")
    assert "-" not in head["ETag"]
    stat = await storage.stat("job/9/a.png")
    assert stat is not None and stat.hash == blake3_of(data[:100] * 10)


async def test_a_failed_stream_aborts_the_multipart_upload(s3: Any) -> None:
    bucket = new_bucket(s3)
    storage = storage_in(s3, bucket)

    async def dies_after_two_parts() -> AsyncIterator[bytes]:
        async for chunk in generated(2 * MIN_PART_SIZE + 10):
            yield chunk
        raise ConnectionError("backend went away")

    with pytest.raises(ConnectionError):
        await storage.put("job/9/x.bin", dies_after_two_parts(), content_type="video/mp4")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert await storage.stat("job/9/x.bin") is None


async def test_presigned_url_serves_the_bytes_over_http(s3: Any) -> None:
    storage = storage_in(s3, new_bucket(s3))
    data = pattern(70_000)
    key = output_key("job-1", "9", "ComfyUI_00001_.png")
    await storage.put(key, generated(70_000, 70_000), content_type="image/png")
    url, expires = await storage.url(
        key, expires_s=120, content_type="image/png", filename="ComfyUI_00001_.png"
    )
    assert url is not None and expires is not None
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert 'filename="ComfyUI_00001_.png"' in response.headers["content-disposition"]
    async with httpx.AsyncClient() as http:
        tampered = await http.get(url.replace("job-1", "job-2"))
    assert tampered.status_code in (403, 404)


async def test_delete_prefix_pages_through_many_objects(s3: Any) -> None:
    bucket = new_bucket(s3)
    storage = storage_in(s3, bucket, list_page_size=2)
    for i in range(5):
        await storage.put(f"job-1/{i}/a.png", generated(10, 10), content_type="image/png")
    await storage.put("job-10/0/a.png", generated(10, 10), content_type="image/png")
    assert await storage.delete_prefix(job_prefix("job-1")) == 5
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["out/job-10/0/a.png"]


async def test_storage_from_url_uses_endpoint_prefix_and_env_credentials(
    s3: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = new_bucket(s3)
    storage = open_output_storage(
        f"s3://{bucket}/comfy/outputs?endpoint_url={s3_endpoint}&region=us-east-1&part_size_mb=5"
    )
    try:
        assert isinstance(storage, S3OutputStorage) and storage.part_size == MIN_PART_SIZE
        await storage.put("job/1/a.txt", generated(5, 5), content_type="text/plain")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == ["comfy/outputs/job/1/a.txt"]
    finally:
        await storage.close()


async def test_missing_bucket_is_a_storage_error(s3: Any) -> None:
    from comfyrun.errors import StorageError

    storage = storage_in(s3, "no-such-bucket-here")
    with pytest.raises(StorageError):
        await storage.put("job/1/a.txt", generated(5, 5), content_type="text/plain")
