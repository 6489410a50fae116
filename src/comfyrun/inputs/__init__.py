"""Input media for jobs: inline data, URLs (SSRF-guarded) and assets, turned into files to place
on a backend, and the workflow pointed at them.

The API calls `check_submission` (or `validate_inputs`) when a job is submitted; the dispatcher
calls `prepare_inputs` before it runs the job and places `plan.files` on the backend.
"""

from comfyrun.inputs.check import AssetSource, check_submission, validate_inputs
from comfyrun.inputs.decode import decode_data, sniff_content_type
from comfyrun.inputs.fetch import FetchedFile, UrlFetcher
from comfyrun.inputs.materialize import InputPlan, MaterializedInput, Uploader, prepare_inputs
from comfyrun.inputs.names import placement_name, sanitize_name, split_placement
from comfyrun.inputs.netguard import AddressPolicy
from comfyrun.inputs.specs import InputLimits, InputSpec, InputTarget, parse_input_specs
from comfyrun.inputs.stash import stash_inline_inputs
from comfyrun.inputs.workflow import (
    check_targets,
    find_asset_refs,
    point_workflow_at_inputs,
)

__all__ = [
    "AddressPolicy",
    "AssetSource",
    "FetchedFile",
    "InputLimits",
    "InputPlan",
    "InputSpec",
    "InputTarget",
    "MaterializedInput",
    "Uploader",
    "UrlFetcher",
    "check_submission",
    "check_targets",
    "decode_data",
    "find_asset_refs",
    "parse_input_specs",
    "placement_name",
    "point_workflow_at_inputs",
    "prepare_inputs",
    "sanitize_name",
    "sniff_content_type",
    "split_placement",
    "stash_inline_inputs",
    "validate_inputs",
]
