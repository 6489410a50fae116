"""The client's file calls: an upload (POST /upload/image, /upload/mask) and a download (GET
/view), both streamed with the bodies of `files`, and a model file's metadata (GET
/view_metadata). `FileTransfers` is mixed into `ComfyClient` (`client`), which gives it its
HTTP pool.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from comfyrun.comfy.errors import ComfyProtocolError
from comfyrun.comfy.files import CHUNK, UploadData, UploadResult, ViewStream, upload_body
from comfyrun.comfy.http import ComfyHTTP
from comfyrun.comfy.outputs import FileRef

JSON = dict[str, Any]


class FileTransfers:
    """Files to and from one ComfyUI server (ComfyClient gives `_require_http`)."""

    @abstractmethod
    def _require_http(self) -> ComfyHTTP:
        """The started client's HTTP pool."""

    async def upload_image(
        self,
        data: UploadData,
        filename: str,
        *,
        subfolder: str = "",
        type: str = "input",
        overwrite: bool = False,
        mask: bool = False,
        original_ref: FileRef | Mapping[str, Any] | None = None,
    ) -> UploadResult:
        """POST /upload/image (or /upload/mask with `mask` and `original_ref`), streamed.

        The multipart body is generated as it is sent, so a large file or stream is never
        held whole in memory. ComfyUI may rename the file (`name (1).png`): use the result.
        """
        if mask and original_ref is None:
            raise ValueError("a mask upload needs original_ref (the image it applies to)")
        content, headers = await upload_body(
            data,
            filename,
            subfolder=subfolder,
            type=type,
            overwrite=overwrite,
            original_ref=original_ref if mask else None,
        )
        http = self._require_http()
        path = "/upload/mask" if mask else "/upload/image"
        result = http.json(await http.request("POST", path, content=content, headers=headers))
        if "name" not in result:
            raise ComfyProtocolError(f"upload answer without 'name': {result!r}")
        return UploadResult(
            name=str(result["name"]),
            subfolder=str(result.get("subfolder") or ""),
            type=str(result.get("type") or type),
        )

    @contextlib.asynccontextmanager
    async def view(self, ref: FileRef, *, chunk_size: int = CHUNK) -> AsyncIterator[ViewStream]:
        """GET /view, streamed: ``async with client.view(ref) as s: async for chunk in s``."""
        async with self._require_http().stream("GET", "/view", params=ref.view_params) as resp:
            yield ViewStream(resp, chunk_size)

    async def view_metadata(self, folder: str, filename: str) -> JSON | None:
        """A model's safetensors metadata (GET /view_metadata/{folder}); None where ComfyUI
        has none (its 404)."""
        http = self._require_http()
        path = f"/view_metadata/{quote(folder, safe='')}"
        reply = await http.request("GET", path, params={"filename": filename}, expect=(200, 404))
        return None if reply.status_code == 404 else await http.json_off_loop(reply)


__all__ = ["FileTransfers"]
