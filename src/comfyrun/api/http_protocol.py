"""The HTTP/1.1 protocol comfyrun serves with: uvicorn's httptools one, with a cap on a request's
head (its line and headers).

httptools (llhttp, in C) parses a request for a fraction of what h11 (pure Python) costs: about
2 ms of CPU per job on the hot path, where a v2 job makes two requests. But it buffers a head
without bound, and uvicorn caps the head only with h11. So this protocol counts the bytes that
arrive while a request's head is still open: once they pass `max_header_bytes` and the head is
still not complete, the request is refused (400) and the connection closed, as h11 does with
`h11_max_incomplete_event_size`. A head that arrives complete goes on to the app, whose limits
middleware (api/limits.py) refuses one over the limit with 431 in the dialect's own shape.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CappedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; `capped_protocol` makes one with a given limit."""

    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # between requests, the next head may start any time
        self._head_bytes = 0
        self._heads = 0  # heads completed on this connection

    def data_received(self, data: bytes) -> None:
        counting, heads = self._head_open, self._heads
        super().data_received(data)
        if not counting or not self._head_open or self._heads != heads:
            return  # a body, or a head completed in this data (the next one counts from here)
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes and not self.transport.is_closing():
            self.send_400_response("Request line and headers too large.")

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._head_bytes = 0
        self._heads += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_open = True
        super().on_message_complete()


def capped_protocol(max_header_bytes: int) -> type[CappedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` setting, refusing heads over the limit."""
    return type(
        "CappedHttpToolsProtocol",
        (CappedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes},
    )


__all__ = ["CappedHttpToolsProtocol", "capped_protocol"]
