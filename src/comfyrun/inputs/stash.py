"""Moving inline input data out of the job record and into the asset store, at submission.

A job's `inputs` are stored with the job and read again on every retry; megabytes of base64 in
every row (and in every GET of the job) cost more than a short asset id. `stash_inline_inputs`
uploads each `data` entry as an asset (deduplicated by content) and returns the entries with
`asset_id` in place of `data`, keeping `name`, `node` and `input`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from comfyrun.core.job import JSON
from comfyrun.inputs.decode import decode_data, sniff_content_type
from comfyrun.inputs.specs import InputLimits, parse_input_specs
from comfyrun.outputs.classify import content_type_for


class AssetUploader(Protocol):
    """The part of comfyrun.assets.AssetService this needs."""

    async def upload(
        self,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        file_path: str | None = None,
        expected_hash: str | None = None,
        tags: Sequence[str] = (),
    ) -> tuple[Any, bool]: ...


async def stash_inline_inputs(
    raw_inputs: Sequence[Any], *, assets: AssetUploader, limits: InputLimits | None = None
) -> list[JSON]:
    """The `inputs` with every inline `data` entry uploaded as an asset and replaced by its
    `asset_id`. Raises InputRejected for invalid inputs (nothing is uploaded then)."""
    limits = limits or InputLimits()
    specs = parse_input_specs(raw_inputs, limits)
    decoded = {
        spec.index: decode_data(spec.data, max_bytes=limits.max_file_bytes, index=spec.index)
        for spec in specs
        if spec.data is not None
    }
    result: list[JSON] = []
    for spec, raw in zip(specs, raw_inputs, strict=True):
        entry: JSON = dict(raw) if isinstance(raw, Mapping) else {}
        if spec.index in decoded:
            data, declared = decoded[spec.index]
            content_type = (
                declared
                or sniff_content_type(data[:64])
                or (content_type_for(spec.name) if spec.name else "application/octet-stream")
            )
            asset, _ = await assets.upload(
                _once(data), content_type=content_type, file_path=spec.name, tags=("input",)
            )
            del entry["data"]
            entry["asset_id"] = asset.id
        result.append(entry)
    return result


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


__all__ = ["AssetUploader", "stash_inline_inputs"]
