"""From a job's `inputs` and asset references to files ready to place on a backend.

    plan = await prepare_inputs(job.workflow, job.inputs, job_id=job.id, limits=limits,
                                tmp_dir=tmp, fetcher=fetcher, assets=assets)
    try:
        workflow = await plan.place(upload)   # upload(file) -> the name the backend stored it as
        ... submit workflow ...
    finally:
        await plan.cleanup()

Every file gets a name unique to the job ("comfyrun/<job_id>/<name>", see `names`). Data inputs
stay in memory (they arrived in the request); URL and asset inputs are streamed to files under
`tmp_dir`. The dispatcher does the placing (POST /upload/image, or a copy into a managed
backend's input folder); this module only says what to place and where the workflow must point.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyrun.core.job import JSON
from comfyrun.errors import InputRejected, MissingAsset, NotFound
from comfyrun.inputs.check import AssetSource, check_count, resolve_asset
from comfyrun.inputs.decode import decode_data, sniff_content_type
from comfyrun.inputs.fetch import UrlFetcher
from comfyrun.inputs.names import placement_name, split_placement
from comfyrun.inputs.specs import InputLimits, InputSpec, InputTarget, parse_input_specs
from comfyrun.inputs.workflow import (
    check_targets,
    find_asset_refs,
    point_workflow_at_inputs,
    resolve_target,
)
from comfyrun.outputs.classify import content_type_for
from comfyrun.outputs.keys import safe_segment

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class MaterializedInput:
    """One file to place on a backend before the job's prompt is submitted."""

    #: The bytes (data inputs) or a temporary file holding them (URL and asset inputs).
    source: Path | bytes
    #: The placed name, relative to ComfyUI's input folder: "comfyrun/<job_id>/<name>".
    filename: str
    content_type: str
    #: The node input it goes to, when the caller named one.
    target: InputTarget | None
    size_bytes: int
    #: Position in `inputs`; None for an asset referenced from inside the workflow.
    spec_index: int | None = None
    asset_id: str | None = None

    @property
    def subfolder(self) -> str:
        """For /upload/image: the `subfolder` field."""
        return split_placement(self.filename)[0]

    @property
    def name(self) -> str:
        """For /upload/image: the file's own name."""
        return split_placement(self.filename)[1]

    async def chunks(self, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """Stream the bytes, from memory or from the temporary file."""
        if isinstance(self.source, bytes):
            for start in range(0, len(self.source), chunk_size):
                yield self.source[start : start + chunk_size]
            return
        fh = await asyncio.to_thread(self.source.open, "rb")
        try:
            while chunk := await asyncio.to_thread(fh.read, chunk_size):
                yield chunk
        finally:
            await asyncio.to_thread(fh.close)


#: Places one file on a backend and returns the name it is stored under there ("sub/x.png").
Uploader = Callable[[MaterializedInput], Awaitable[str]]


@dataclass
class InputPlan:
    """A job's inputs, ready to place, and the workflow pointed at them."""

    files: list[MaterializedInput]
    #: The workflow pointed at each file's planned `filename`.
    workflow: JSON
    specs: list[InputSpec] = field(default_factory=list)
    workdir: Path | None = None
    _source_workflow: JSON = field(default_factory=dict)
    _asset_ids: dict[str, int] = field(default_factory=dict)

    def pointed_at(self, stored_as: Mapping[str, str]) -> JSON:
        """The workflow when some files were stored under other names than planned
        (`stored_as`: planned filename -> actual name, e.g. ComfyUI's "x (1).png")."""
        if not stored_as:
            return self.workflow
        spec_names = ["" for _ in self.specs]
        asset_names: dict[str, str] = {}
        for item in self.files:
            actual = stored_as.get(item.filename, item.filename)
            if item.spec_index is not None:
                spec_names[item.spec_index] = actual
            elif item.asset_id is not None:
                asset_names[item.asset_id] = actual
        return point_workflow_at_inputs(self._source_workflow, self.specs, spec_names, asset_names)

    async def place(self, upload: Uploader) -> JSON:
        """Upload every file with `upload` and return the workflow to submit."""
        stored_as: dict[str, str] = {}
        for item in self.files:
            actual = await upload(item)
            if actual != item.filename:
                stored_as[item.filename] = actual
        return self.pointed_at(stored_as)

    async def cleanup(self) -> None:
        """Remove the temporary files (idempotent)."""
        if self.workdir is not None:
            await asyncio.to_thread(shutil.rmtree, self.workdir, True)
            self.workdir = None


async def prepare_inputs(
    workflow: JSON,
    raw_inputs: Sequence[Any],
    *,
    job_id: str,
    limits: InputLimits,
    tmp_dir: Path | None = None,
    fetcher: UrlFetcher | None = None,
    assets: AssetSource | None = None,
) -> InputPlan:
    """Decode, fetch and read every input of a job and plan where each goes. Raises
    InputRejected / MissingAsset; temporary files are removed when it raises."""
    specs = parse_input_specs(raw_inputs, limits)
    check_targets(workflow, specs)
    refs = find_asset_refs(workflow)
    check_count(len(specs) + len(refs), limits)
    if tmp_dir is not None:
        await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, "", "comfyrun-in-", tmp_dir))
    builder = _Builder(job_id, limits, workdir, fetcher or UrlFetcher(limits), assets)
    try:
        for spec in specs:
            await builder.add_spec(workflow, spec)
        for asset_id in refs:
            await builder.add_asset_ref(asset_id)
        spec_names = [f.filename for f in builder.files if f.spec_index is not None]
        asset_names = {
            f.asset_id: f.filename
            for f in builder.files
            if f.spec_index is None and f.asset_id is not None
        }
        pointed = point_workflow_at_inputs(workflow, specs, spec_names, asset_names)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
        raise
    log.debug("prepared %d inputs for job %s", len(builder.files), job_id, extra={"job_id": job_id})
    return InputPlan(builder.files, pointed, specs, workdir, workflow)


class _Builder:
    def __init__(
        self,
        job_id: str,
        limits: InputLimits,
        workdir: Path,
        fetcher: UrlFetcher,
        assets: AssetSource | None,
    ) -> None:
        self.job_id = job_id
        self.limits = limits
        self.workdir = workdir
        self.fetcher = fetcher
        self.assets = assets
        self.files: list[MaterializedInput] = []
        self.total = 0
        self.names: set[str] = set()

    async def add_spec(self, workflow: JSON, spec: InputSpec) -> None:
        target = resolve_target(workflow, spec)
        source: Path | bytes
        if spec.data is not None:
            data, declared = decode_data(
                spec.data, max_bytes=self.limits.max_file_bytes, index=spec.index
            )
            source, size = data, len(data)
            content_type = declared or sniff_content_type(data[:64]) or _by_name(spec.name)
            hint = None
        elif spec.url is not None:
            fetched = await self.fetcher.fetch(spec.url, self.workdir / f"{spec.index}.url")
            source, size, hint = fetched.path, fetched.size_bytes, fetched.filename
            content_type = fetched.content_type
            if content_type == "application/octet-stream":
                content_type = await _sniff_file(fetched.path) or _by_name(spec.name or hint)
        else:
            assert spec.asset_id is not None
            asset = await resolve_asset(self.assets, spec.asset_id)
            source, size = await self._copy_asset(asset, f"{spec.index}.asset")
            content_type, hint = asset.content_type, asset.file_path
        name = spec.name or self._name_from(hint, content_type, f"input_{spec.index}")
        self._add(source, name, content_type, target, size, spec.index, spec.asset_id)

    async def add_asset_ref(self, asset_id: str) -> None:
        asset = await resolve_asset(self.assets, asset_id)
        source, size = await self._copy_asset(asset, f"ref-{len(self.files)}.asset")
        base = self._name_from(asset.file_path, asset.content_type, "asset")
        self._add(
            source,
            f"assets/{safe_segment(asset_id)}/{base}",
            asset.content_type,
            None,
            size,
            None,
            asset_id,
        )

    def _add(
        self,
        source: Path | bytes,
        name: str,
        content_type: str,
        target: InputTarget | None,
        size: int,
        spec_index: int | None,
        asset_id: str | None,
    ) -> None:
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise InputRejected(
                f"the inputs add up to more than {self.limits.max_total_bytes} bytes",
                details={"reason": "total_too_large", "limit": self.limits.max_total_bytes},
            )
        name = self._unique(name)
        self.files.append(
            MaterializedInput(
                source=source,
                filename=placement_name(self.job_id, name),
                content_type=content_type,
                target=target,
                size_bytes=size,
                spec_index=spec_index,
                asset_id=asset_id,
            )
        )

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        stem, ext = posixpath.splitext(name)
        while candidate in self.names:
            candidate = f"{stem}_{n}{ext}"
            n += 1
        self.names.add(candidate)
        return candidate

    def _name_from(self, hint: str | None, content_type: str, fallback: str) -> str:
        base = posixpath.basename((hint or "").replace("\\", "/"))
        name = safe_segment(base.replace("[", "_").replace("]", "_"), fallback="") if base else ""
        if not name:
            name = fallback + _extension_for(content_type)
        return name

    async def _copy_asset(self, asset: Any, filename: str) -> tuple[Path, int]:
        assert self.assets is not None
        if asset.size_bytes > self.limits.max_file_bytes:
            raise InputRejected(
                f"asset {asset.id} is larger than {self.limits.max_file_bytes} bytes",
                details={"asset_id": asset.id, "reason": "file_too_large"},
            )
        path = self.workdir / filename
        fh = await asyncio.to_thread(path.open, "wb")
        size = 0
        try:
            async for chunk in self.assets.open_content(asset):
                size += len(chunk)
                await asyncio.to_thread(fh.write, chunk)
        except NotFound as exc:
            raise MissingAsset(
                f"the bytes of asset {asset.id} are gone", details={"asset_id": asset.id}
            ) from exc
        finally:
            await asyncio.to_thread(fh.close)
        return path, size


def _by_name(name: str | None) -> str:
    return content_type_for(name) if name else "application/octet-stream"


async def _sniff_file(path: Path) -> str | None:
    def head() -> bytes:
        with path.open("rb") as fh:
            return fh.read(64)

    return sniff_content_type(await asyncio.to_thread(head))


_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
}


def _extension_for(content_type: str) -> str:
    return _EXTENSIONS.get(content_type.split(";", 1)[0].strip(), ".bin")


__all__ = [
    "InputPlan",
    "MaterializedInput",
    "Uploader",
    "prepare_inputs",
]
