"""Files in and out of ComfyUI: the streamed multipart body of an upload, the streamed body of
GET /view. Nothing here holds a whole file in memory."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyrun.comfy.http import ReplyStream, stream_errors
from comfyrun.comfy.outputs import FileRef

UploadData = bytes | AsyncIterable[bytes] | Path

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class UploadResult:
    """Where ComfyUI stored an upload; it may have renamed it (`name (1).png`)."""

    name: str
    subfolder: str
    type: str

    @property
    def load_image_value(self) -> str:
        """The value LoadImage's `image` input takes for this upload."""
        name = f"{self.subfolder}/{self.name}" if self.subfolder else self.name
        return name if self.type == "input" else f"{name} [{self.type}]"


class ViewStream:
    """The body of GET /view, streamed: ``async for chunk in stream``."""

    def __init__(self, response: ReplyStream, chunk_size: int = CHUNK) -> None:
        self._response = response
        self._chunk_size = chunk_size
        self.content_type: str | None = response.headers.get("content-type")
        length = response.headers.get("content-length")
        self.content_length: int | None = int(length) if length and length.isdigit() else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes(self._chunk_size):
                yield chunk
        except Exception as exc:
            error = stream_errors(exc)
            if error is None:
                raise
            raise error from exc


async def upload_body(
    data: UploadData,
    filename: str,
    *,
    subfolder: str,
    type: str,
    overwrite: bool,
    original_ref: FileRef | Mapping[str, Any] | None = None,
) -> tuple[bytes | AsyncIterable[bytes], dict[str, str]]:
    """The body and headers of POST /upload/image (or /upload/mask with `original_ref`).

    Bytes already in memory are sent with a length; a stream or a file goes out chunked.
    """
    fields = {"overwrite": "true" if overwrite else "false", "subfolder": subfolder, "type": type}
    if original_ref is not None:
        ref = original_ref.view_params if isinstance(original_ref, FileRef) else original_ref
        fields["original_ref"] = json.dumps(dict(ref))
    boundary = uuid.uuid4().hex
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    body = _multipart(boundary, fields, filename, content_type, _chunks(data))
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if isinstance(data, bytes):
        return b"".join([part async for part in body]), headers
    return body, headers


async def _chunks(data: UploadData) -> AsyncIterator[bytes]:
    if isinstance(data, bytes):
        yield data
    elif isinstance(data, Path):
        with data.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
    else:
        async for chunk in data:
            yield chunk


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


async def _multipart(
    boundary: str,
    fields: Mapping[str, str],
    filename: str,
    content_type: str,
    chunks: AsyncIterator[bytes],
) -> AsyncIterator[bytes]:
    for name, value in fields.items():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="{_quote(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    async for chunk in chunks:
        if chunk:
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


__all__ = ["CHUNK", "UploadData", "UploadResult", "ViewStream", "upload_body"]
