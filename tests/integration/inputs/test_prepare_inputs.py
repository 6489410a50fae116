"""From a job's inputs to files to place: every input form together, against a local HTTP server
and an asset store on disk."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from tests.support.media import JPEG, PNG, collect

from comfyrun.assets import AssetService
from comfyrun.errors import InputRejected, MissingAsset
from comfyrun.inputs import (
    InputLimits,
    MaterializedInput,
    check_submission,
    prepare_inputs,
)
from comfyrun.outputs import iterate_bytes
from comfyrun.outputs.local import LocalOutputStorage

LIMITS = InputLimits(allow_networks=("127.0.0.1/32",), fetch_timeout_s=10)
WAV = b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 100
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 200


def workflow() -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "mask.png"}},
        "4": {"class_type": "LoadAudio", "inputs": {"audio": "voice.wav"}},
        "5": {
            "class_type": "LoadVideo",
            "inputs": {"file": {"__type": "core/ASSET", "info": {"id": "REF"}}},
        },
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }


@pytest.fixture
def assets(tmp_path: Path) -> AssetService:
    return AssetService(LocalOutputStorage(tmp_path / "storage"))


async def test_every_input_form_together(
    media_server: str, assets: AssetService, tmp_path: Path
) -> None:
    voice, _ = await assets.upload(
        iterate_bytes(WAV), content_type="audio/wav", file_path="voice.wav"
    )
    clip, _ = await assets.upload(
        iterate_bytes(MP4), content_type="video/mp4", file_path="clips/clip.mp4"
    )
    wf = workflow()
    wf["5"]["inputs"]["file"]["info"]["id"] = clip.id
    raw = [
        {"name": "photo.png", "data": base64.b64encode(PNG).decode()},
        {
            "data": "data:image/jpeg;base64," + base64.b64encode(JPEG).decode(),
            "node": "2",
            "input": "image",
        },
        {"url": f"{media_server}/attachment", "node": "3"},
        {"asset_id": voice.id, "name": "voice.wav"},
    ]
    plan = await prepare_inputs(
        wf, raw, job_id="job-7", limits=LIMITS, tmp_dir=tmp_path / "tmp", assets=assets
    )
    try:
        by_name = {f.filename: f for f in plan.files}
        assert list(by_name) == [
            "comfyrun/job-7/photo.png",
            "comfyrun/job-7/input_1.jpg",
            "comfyrun/job-7/cat.jpg",
            "comfyrun/job-7/voice.wav",
            f"comfyrun/job-7/assets/{clip.id}/clip.mp4",
        ]
        photo, jpeg, fetched, audio, video = plan.files
        assert (photo.content_type, photo.source, photo.spec_index) == ("image/png", PNG, 0)
        assert (jpeg.content_type, jpeg.source) == ("image/jpeg", JPEG)
        assert fetched.content_type == "image/jpeg" and isinstance(fetched.source, Path)
        assert await collect(fetched.chunks()) == JPEG
        assert (audio.asset_id, audio.content_type) == (voice.id, "audio/wav")
        assert await collect(audio.chunks()) == WAV
        assert (video.asset_id, video.spec_index, video.target) == (clip.id, None, None)
        assert await collect(video.chunks(7)) == MP4
        assert (photo.subfolder, photo.name) == ("comfyrun/job-7", "photo.png")

        out = plan.workflow
        assert out["1"]["inputs"]["image"] == "comfyrun/job-7/photo.png"
        assert out["2"]["inputs"]["image"] == "comfyrun/job-7/input_1.jpg"
        assert out["3"]["inputs"]["image"] == "comfyrun/job-7/cat.jpg"
        assert out["4"]["inputs"]["audio"] == "comfyrun/job-7/voice.wav"
        assert out["5"]["inputs"]["file"] == f"comfyrun/job-7/assets/{clip.id}/clip.mp4"
        assert out["9"] == wf["9"]

        uploaded: list[str] = []

        async def upload(item: MaterializedInput) -> str:
            uploaded.append(item.filename)
            return "comfyrun/job-7/photo (1).png" if item.name == "photo.png" else item.filename

        placed = await plan.place(upload)
        assert uploaded == [f.filename for f in plan.files]
        assert placed["1"]["inputs"]["image"] == "comfyrun/job-7/photo (1).png"
        assert placed["5"]["inputs"]["file"] == out["5"]["inputs"]["file"]
    finally:
        workdir = plan.workdir
        await plan.cleanup()
    assert workdir is not None and not await asyncio.to_thread(workdir.exists)


async def test_names_that_collide_get_a_suffix(media_server: str, tmp_path: Path) -> None:
    raw = [
        {"name": "photo.png", "data": base64.b64encode(PNG).decode()},
        {"url": f"{media_server}/photo.png", "node": "2", "input": "image"},
    ]
    plan = await prepare_inputs(
        workflow() | {"5": {"class_type": "X", "inputs": {}}},
        raw,
        job_id="j",
        limits=LIMITS,
        tmp_dir=tmp_path,
    )
    assert [f.name for f in plan.files] == ["photo.png", "photo_1.png"]
    await plan.cleanup()


async def test_unknown_asset_is_missing_and_nothing_is_left(
    assets: AssetService, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    with pytest.raises(MissingAsset) as caught:
        await prepare_inputs(workflow(), [], job_id="j", limits=LIMITS, tmp_dir=tmp, assets=assets)
    assert caught.value.details == {"asset_id": "REF"}
    assert await asyncio.to_thread(lambda: list(tmp.iterdir())) == []
    with pytest.raises(MissingAsset):
        await prepare_inputs(
            {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}},
            [{"asset_id": "nope", "node": "1"}],
            job_id="j",
            limits=LIMITS,
            tmp_dir=tmp,
            assets=assets,
        )


async def test_a_refused_url_fails_the_whole_plan(media_server: str, tmp_path: Path) -> None:
    raw = [
        {"name": "photo.png", "data": base64.b64encode(PNG).decode()},
        {"url": f"{media_server}/page.html", "node": "2"},
    ]
    wf = workflow()
    del wf["5"]
    with pytest.raises(InputRejected) as caught:
        await prepare_inputs(wf, raw, job_id="j", limits=LIMITS, tmp_dir=tmp_path / "t")
    assert caught.value.details["reason"] == "content_type"
    assert await asyncio.to_thread(lambda: list((tmp_path / "t").iterdir())) == []


async def test_limits_on_count_and_total_size(tmp_path: Path) -> None:
    wf = workflow()
    del wf["5"]
    data = base64.b64encode(PNG).decode()
    three = [{"name": f"{i}.png", "data": data} for i in range(3)]
    with pytest.raises(InputRejected) as caught:
        await prepare_inputs(
            wf, three, job_id="j", limits=InputLimits(max_files=2), tmp_dir=tmp_path
        )
    assert caught.value.details["reason"] == "too_many_files"
    with pytest.raises(InputRejected) as caught:
        await prepare_inputs(
            wf,
            three,
            job_id="j",
            limits=InputLimits(max_total_bytes=2 * len(PNG) + 1),
            tmp_dir=tmp_path,
        )
    assert caught.value.details["reason"] == "total_too_large"


async def test_check_submission_resolves_assets(assets: AssetService) -> None:
    wf = workflow()
    with pytest.raises(MissingAsset):
        await check_submission(wf, [], limits=LIMITS, assets=assets)
    with pytest.raises(MissingAsset):
        await check_submission(wf, [], limits=LIMITS, assets=None)
    clip, _ = await assets.upload(iterate_bytes(MP4), content_type="video/mp4")
    wf["5"]["inputs"]["file"]["info"]["id"] = clip.id
    assert (
        await check_submission(
            wf, [{"asset_id": clip.id, "node": "1"}], limits=LIMITS, assets=assets
        )
        is wf
    )
    with pytest.raises(MissingAsset):
        await check_submission(
            wf, [{"asset_id": "gone", "node": "1"}], limits=LIMITS, assets=assets
        )
