"""Model files delivered with jobs: the spec of a job's `models` (pure), the content-addressed
cache with its byte budget, and the downloaders that fill it."""

from comfyrun.models.cache import CachedModel, Lease, ModelCache, Validators, extra_paths_yaml
from comfyrun.models.download import DownloadLimits, make_downloader
from comfyrun.models.specs import MODEL_FOLDERS, ModelRef, parse_model, parse_models

__all__ = [
    "MODEL_FOLDERS",
    "CachedModel",
    "DownloadLimits",
    "Lease",
    "ModelCache",
    "ModelRef",
    "Validators",
    "extra_paths_yaml",
    "make_downloader",
    "parse_model",
    "parse_models",
]
