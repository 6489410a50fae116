"""Content-addressed assets (blake3, dedup, metadata) over an OutputStorage."""

from comfyrun.assets.model import Asset, normalize_hash
from comfyrun.assets.service import AssetService, blob_key

__all__ = ["Asset", "AssetService", "blob_key", "normalize_hash"]
