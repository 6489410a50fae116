"""What the client raises when the server answers with an error: `ComfyrunAPIError`, read from
the answer's error envelope (or its text, when that is not JSON)."""

from __future__ import annotations

from typing import Any

import httpx


class ComfyrunAPIError(Exception):
    """The server answered with an error envelope (or something that is not JSON)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after


def raise_for(resp: httpx.Response) -> None:
    """Raise ComfyrunAPIError for an answer that is not a success (its error envelope read)."""
    if resp.is_success:
        return
    try:
        body = resp.json()
        err = body["error"]
        code, message, details = str(err["code"]), str(err["message"]), err.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", resp.text[:500], None
    retry = resp.headers.get("retry-after")
    raise ComfyrunAPIError(
        resp.status_code,
        code,
        message,
        details,
        float(retry) if retry and retry.isdigit() else None,
    )


__all__ = ["ComfyrunAPIError", "raise_for"]
