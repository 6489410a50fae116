"""The checks a submission's inputs get before the job is queued: everything that needs no
download, plus whether the named assets exist. Bad input is a 4xx at submission, not a failed
job later."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from comfyrun.core.job import JSON
from comfyrun.errors import InputRejected, MissingAsset, NotFound
from comfyrun.inputs.decode import decode_data
from comfyrun.inputs.fetch import Resolve, UrlFetcher
from comfyrun.inputs.netguard import AddressPolicy
from comfyrun.inputs.specs import InputLimits, InputSpec, parse_input_specs
from comfyrun.inputs.workflow import check_targets, find_asset_refs


class AssetSource(Protocol):
    """What materializing needs of the asset service (comfyrun.assets.AssetService has it)."""

    async def get(self, asset_id: str) -> Any: ...

    def open_content(
        self, asset: Any, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]: ...


def validate_inputs(
    workflow: JSON, raw_inputs: Sequence[Any], limits: InputLimits
) -> list[InputSpec]:
    """The checks that need no network, run at submission: shapes, counts, names, inline data
    (decoded, so bad base64 is refused now), URL schemes and literal addresses, targets, and
    the form of asset references. Raises InputRejected or MissingAsset."""
    specs = parse_input_specs(raw_inputs, limits)
    check_targets(workflow, specs)
    refs = find_asset_refs(workflow)
    check_count(len(specs) + len(refs), limits)
    policy = AddressPolicy.from_entries(limits.allow_networks)
    for spec in specs:
        if spec.data is not None:
            decode_data(spec.data, max_bytes=limits.max_file_bytes, index=spec.index)
        elif spec.url is not None:
            policy.check_url(spec.url)
    return specs


class ModelSource(Protocol):
    """Where a job's model file comes from (comfyrun.models.specs.ModelRef has it)."""

    @property
    def url(self) -> str | None: ...

    @property
    def asset_id(self) -> str | None: ...


async def check_submission(
    workflow: JSON,
    raw_inputs: Sequence[Any],
    *,
    assets: AssetSource | None,
    limits: InputLimits | None = None,
    resolve: Resolve | None = None,
    models: Sequence[ModelSource] = (),
) -> JSON:
    """`validate_inputs`, plus: every asset named (in `inputs` or in the workflow) exists, and
    every URL passes the fetcher's own address check (names resolved by `resolve`, default
    the system's), so a URL the fetch would refuse is refused now. Returns the workflow
    unchanged; fits JobService's input checker with functools.partial. `limits` defaults to
    InputLimits()."""
    limits = limits or InputLimits()
    specs = validate_inputs(workflow, raw_inputs, limits)
    fetcher = UrlFetcher(limits, resolve=resolve)
    for spec in specs:
        if spec.url is not None:
            await fetcher.check(spec.url)
    # the model files the job brings (models.specs checked their form), as the inputs: a URL
    # the download would refuse, an asset that does not exist, is refused now
    for model in models:
        if model.url is not None and model.url.lower().startswith("s3://"):
            check_s3_url(model.url)
        elif model.url is not None:
            await fetcher.check(model.url, what="model URL")
    ids = [s.asset_id for s in specs if s.asset_id is not None] + find_asset_refs(workflow)
    ids += [m.asset_id for m in models if m.asset_id is not None]
    for asset_id in dict.fromkeys(ids):
        await resolve_asset(assets, asset_id)
    return workflow


def check_s3_url(url: str) -> None:
    """InputRejected unless `url` names a bucket and a key (s3://bucket/key)."""
    parts = urlsplit(url)
    if not parts.netloc or not parts.path.lstrip("/"):
        raise InputRejected(
            f"{url} names no bucket and key", details={"url": url, "reason": "bad_url"}
        )


async def resolve_asset(assets: AssetSource | None, asset_id: str) -> Any:
    if assets is None:
        raise MissingAsset(
            f"asset {asset_id!r} cannot be resolved: this server has no asset store",
            details={"asset_id": asset_id},
        )
    try:
        return await assets.get(asset_id)
    except NotFound as exc:
        raise MissingAsset(
            f"asset {asset_id!r} does not exist", details={"asset_id": asset_id}
        ) from exc


def check_count(count: int, limits: InputLimits) -> None:
    if count > limits.max_files:
        raise InputRejected(
            f"too many input files: {count} (the limit is {limits.max_files})",
            details={"reason": "too_many_files", "count": count, "limit": limits.max_files},
        )


__all__ = [
    "AssetSource",
    "ModelSource",
    "check_count",
    "check_s3_url",
    "check_submission",
    "resolve_asset",
    "validate_inputs",
]
