"""`_meta.title`: the node's own title, else the name the frontend displays for its class.

The frontend shows a localized display name that sometimes differs from object_info's
`display_name` (which may even be null). The overrides below are the English names frontend 1.27
shows where they differ, taken from the conversion fixtures. The title is informational only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DISPLAY_NAME_OVERRIDES: Mapping[str, str] = {
    "ImageBlend": "Image Blend",
    "ImageBlur": "Image Blur",
    "ImageQuantize": "Image Quantize",
    "ImageSharpen": "Image Sharpen",
    "ImageScaleToTotalPixels": "Scale Image to Total Pixels",
}


def display_name(class_type: str, object_info: Mapping[str, Any]) -> str:
    """The frontend's display name for a node class."""
    override = DISPLAY_NAME_OVERRIDES.get(class_type)
    if override is not None:
        return override
    node_def = object_info.get(class_type)
    name = node_def.get("display_name") if isinstance(node_def, dict) else None
    return name if isinstance(name, str) and name else class_type
