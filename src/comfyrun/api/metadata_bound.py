"""A job's client `metadata` is free-form JSON stored with the job and sent back in every view
of it (listings, events, webhooks): bounded by `metadata_max_bytes` of compact JSON, not only by
the request body's limit."""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError


def check_metadata(metadata: Any, max_bytes: int, *, field: str = "metadata") -> None:
    """Refuse `metadata` past `max_bytes` of compact UTF-8 JSON: the 422 of a field error
    (each dialect shapes it), naming `field`."""
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", field),
                    "msg": f"{field} is {size} bytes of JSON; at most {max_bytes}",
                    "type": "too_long",
                }
            ]
        )


__all__ = ["check_metadata"]
