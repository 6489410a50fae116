"""Model-aware routing: which queued job a backend takes next, given the models it has loaded. Pure.

ComfyUI keeps the models its last prompts used in memory; a prompt that needs another one
first loads it (seconds to minutes for a checkpoint). So a backend should preferably run the
jobs whose models it already holds.

Rules:
- A job's models are the files its loader nodes name (`ckpt_name`, `lora_name`, `vae_name`,
  `unet_name`, ...; `workflow_models`) and the files it brings (its `models` option), each as
  "folder/name".
- What a backend holds is learned from the jobs sent there (`remember`): the last `keep` models
  of each folder that its jobs used, most recent last, as ComfyUI (and the emulator's
  `--loaded-models`) keep them.
- A backend with room takes, among the first queued jobs (a window, in claim order) of the
  queue's best priority, the one with the most of its models loaded there (`choose`); on a
  tie, one whose models no other backend holds (those others take theirs), then the one first
  in the queue. So a job of lower priority never goes first, and a backend
  never stays idle while a job waits: it takes the head of the queue when no job fits it better.
- No job is overtaken forever: each job counts the jobs taken before it for affinity; one
  overtaken `max_overtake` times may not be overtaken again (only it or a job ahead of it may
  be chosen), so it starts after at most `max_overtake` later jobs have.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: A loader input name and the ComfyUI model folder its value names.
LOADER_INPUTS: Mapping[str, str] = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
}
#: Node types whose loader inputs name another folder than `LOADER_INPUTS` says.
LOADER_OVERRIDES: Mapping[str, Mapping[str, str]] = {
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
}
#: Legacy folder names, as ComfyUI maps them.
_LEGACY = {"unet": "diffusion_models", "clip": "text_encoders", "t2i_adapter": "controlnet"}


def model_key(folder: str, name: str) -> str:
    """How a model file is named here: "folder/name"."""
    return f"{_LEGACY.get(folder, folder)}/{name}"


def workflow_models(workflow: Mapping[str, Any]) -> frozenset[str]:
    """The model files the loader nodes of an API-format workflow name."""
    keys: set[str] = set()
    for node in workflow.values():
        # a JSON object (dict) told first: the Mapping ABC's check costs several times as much
        if not isinstance(node, dict | Mapping):
            continue
        inputs = node.get("inputs")
        if not isinstance(inputs, dict | Mapping):
            continue
        override = LOADER_OVERRIDES.get(str(node.get("class_type")), {})
        for name, value in inputs.items():
            folder = override.get(name) or LOADER_INPUTS.get(name)
            if folder is not None and isinstance(value, str) and value:
                keys.add(model_key(folder, value))
    return frozenset(keys)


def job_models(workflow: Mapping[str, Any], options: Mapping[str, Any]) -> frozenset[str]:
    """A job's models: those its workflow loads and those it brings (`options["models"]`)."""
    keys = set(workflow_models(workflow))
    brought = options.get("models")
    if isinstance(brought, list):
        for ref in brought:
            if isinstance(ref, Mapping):
                folder, name = ref.get("folder"), ref.get("name")
                if isinstance(folder, str) and isinstance(name, str):
                    keys.add(model_key(folder, name))
    return frozenset(keys)


def folder_of(key: str) -> str:
    return key.split("/", 1)[0]


def remember(loaded: Sequence[str], used: Iterable[str], keep: int = 1) -> tuple[str, ...]:
    """What a backend holds after running a job that used `used`, given it held `loaded`
    (most recent last): the used models become the most recent, and of each folder only the
    `keep` most recent stay."""
    used = sorted(used)
    order = [k for k in loaded if k not in used] + used
    kept: list[str] = []
    per_folder: dict[str, int] = {}
    for key in reversed(order):
        folder = folder_of(key)
        if per_folder.get(folder, 0) < max(1, keep):
            per_folder[folder] = per_folder.get(folder, 0) + 1
            kept.append(key)
    return tuple(reversed(kept))


def affinity(models: Iterable[str], loaded: Iterable[str]) -> int:
    """How many of a job's models a backend holds."""
    held = set(loaded)
    return sum(1 for key in models if key in held)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A queued job as routing sees it."""

    job_id: str
    priority: int
    models: frozenset[str]


def choose(
    candidates: Sequence[Candidate],
    loaded: Iterable[str],
    overtaken: Mapping[str, int],
    max_overtake: int,
    elsewhere: Iterable[str] = (),
) -> int:
    """The index of the job (among `candidates`, in claim order) a backend holding `loaded`
    takes next. `overtaken`: how many jobs were taken before each one. `elsewhere`: what the
    other backends hold; among jobs equally fit here, one whose models no other backend holds
    goes first (the others will take theirs). Raises ValueError when there is no candidate."""
    if not candidates:
        raise ValueError("no candidate")
    held = frozenset(loaded)
    others = frozenset(elsewhere) - held
    head = candidates[0].priority
    eligible = 0
    for i, candidate in enumerate(candidates):
        if candidate.priority != head:
            break
        eligible = i
        if overtaken.get(candidate.job_id, 0) >= max_overtake:
            break
    scores = [
        (affinity(c.models, held), -affinity(c.models, others)) for c in candidates[: eligible + 1]
    ]
    return scores.index(max(scores))


def count_overtaken(
    candidates: Sequence[Candidate], chosen: int, overtaken: Mapping[str, int]
) -> dict[str, int]:
    """`overtaken` after candidate `chosen` was taken: each job ahead of it counts one more,
    and the chosen one is no longer counted."""
    counts = dict(overtaken)
    counts.pop(candidates[chosen].job_id, None)
    for candidate in candidates[:chosen]:
        counts[candidate.job_id] = counts.get(candidate.job_id, 0) + 1
    return counts


__all__ = [
    "LOADER_INPUTS",
    "LOADER_OVERRIDES",
    "Candidate",
    "affinity",
    "choose",
    "count_overtaken",
    "folder_of",
    "job_models",
    "model_key",
    "remember",
    "workflow_models",
]
