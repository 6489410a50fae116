"""Outputs in S3 (moto's server over real HTTP): the Job carries presigned URLs, and the
output download route redirects to one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.support.api import memory_settings, wait_until_ready
from tests.support.emulator import image_workflow
from tests.support.media import REGION, moto_s3_server, new_bucket, s3_client

from comfyrun.cli.server import running_server


@pytest.mark.slow
async def test_outputs_in_s3_are_served_by_presigned_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto_s3_server() as endpoint:
        bucket = new_bucket(s3_client(endpoint))
        settings = memory_settings(
            tmp_path,
            port=0,
            emulators=1,
            emulator_mode="inprocess",
            output_url=f"s3://{bucket}/jobs?endpoint_url={endpoint}&region={REGION}",
        )
        async with running_server(settings) as url:
            await wait_until_ready(url)
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                r = await http.post(
                    "/api/v2/jobs", params={"wait": 60}, json={"workflow": image_workflow()}
                )
                job = r.json()
                assert job["status"] == "succeeded", job
                (out,) = job["outputs"]
                assert out["url"].startswith(endpoint) and "Signature" in out["url"]
                direct = await http.get(out["url"])
                assert direct.status_code == 200 and direct.content.startswith(b"\x89PNG")
                assert len(direct.content) == out["size_bytes"]
                via = await http.get(f"/api/v2/assets/{out['id']}/content")
                assert via.status_code == 302 and via.headers["location"].startswith(endpoint)
                followed = await http.get(
                    f"/api/v2/assets/{out['id']}/content", follow_redirects=True
                )
                assert followed.content == direct.content
                deleted = await http.delete(f"/api/v2/jobs/{job['id']}")
                assert deleted.status_code == 204
        listing = s3_client(endpoint).list_objects_v2(Bucket=bucket)
        assert listing.get("KeyCount", 0) == 0  # the job's files went with it
