"""Listing cursors bound to their listing: the store's cursor (a place in newest-first order)
with a tag of the filters it was made under, so that a cursor taken from one listing (say
`?status=succeeded`, or one batch's jobs) and given to another is refused, not read as a place
in a listing it does not belong to (whose pages would skip or repeat jobs)."""

from __future__ import annotations

import base64
import hashlib

from comfyrun.errors import InvalidRequest

#: Between the store's cursor (URL-safe base64, no padding) and its listing's tag.
SEPARATOR = "."


def _tag(scope: str) -> str:
    digest = hashlib.blake2b(scope.encode("utf-8", "surrogatepass"), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest).decode()


def bind(cursor: str | None, scope: str) -> str | None:
    """The store's `cursor` as handed to a client of the listing `scope` names."""
    return None if cursor is None else f"{cursor}{SEPARATOR}{_tag(scope)}"


def unbind(cursor: str | None, scope: str) -> str | None:
    """The store's cursor in a client's `cursor` for the listing `scope` names; InvalidRequest
    (400) for one this listing did not make."""
    if cursor is None:
        return None
    store_cursor, sep, tag = cursor.rpartition(SEPARATOR)
    if not sep or not store_cursor:
        raise InvalidRequest("invalid cursor", details={"cursor": cursor})
    if tag != _tag(scope):
        raise InvalidRequest(
            "this cursor belongs to a listing with other filters: a cursor continues only "
            "the listing (the same status, metadata or batch) whose next_cursor it was",
            details={"cursor": cursor, "reason": "cursor_filters_differ"},
        )
    return store_cursor


__all__ = ["bind", "unbind"]
