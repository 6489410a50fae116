"""`ComfyrunClient.download_outputs` (and so `comfyrun submit --out`) writes every output
inside its folder, whatever its backend named it: a node id or a name holding "../" wrote
outside (`../../x.sh` from a broken or hostile ComfyUI)."""

from __future__ import annotations

from pathlib import Path

import httpx

from comfyrun.client.client import ComfyrunClient


async def test_outputs_are_saved_inside_the_folder_whatever_their_names(tmp_path: Path) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"png"))
    folder = tmp_path / "a" / "b" / "out"
    job = {
        "outputs": [
            {"id": "o1", "node_id": "9", "name": "ComfyUI_00001_.png", "url": "/f/1"},
            {"id": "o2", "node_id": "../../../../pwn", "name": "../../x.sh", "url": "/f/2"},
            {"id": "o3", "node_id": "..", "name": "..", "url": "/f/3"},
            {"id": "o4", "node_id": "/abs", "name": "/etc/passwd", "url": "/f/4"},
        ]
    }
    async with ComfyrunClient("http://server", transport=transport) as client:
        paths = await client.download_outputs(job, folder)
    assert paths[0] == folder / "9" / "ComfyUI_00001_.png"
    for path in paths:
        assert path.resolve().is_relative_to(folder.resolve()), path
        assert path.read_bytes() == b"png"
    assert len({p.resolve() for p in paths}) == 4
    assert files_under(tmp_path) == sorted(paths)  # (nothing else written anywhere)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())
