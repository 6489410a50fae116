"""Identities that sort by creation time: UUID version 7 (RFC 9562).

A job's id is the key of the store's id index, and its events are indexed by it too. A random
UUID (version 4) puts each new job on a random page of those B-trees, so every enqueue dirtied
(and every commit wrote, and every checkpoint wrote again) pages of its own; ids that grow with
time land on the few pages at the right edge, shared by all the jobs of one commit. A version 7
UUID is still a UUID in the canonical form, unique by its 74 random bits, and no client can read
more into it than the millisecond it was made in (which the job's created_at tells anyway).
"""

from __future__ import annotations

import os
import time
import uuid

_MS_BITS = 48
_RAND_A_BITS = 12
_RAND_B_BITS = 62


def uuid7(unix_ms: int | None = None) -> str:
    """A new UUIDv7 in canonical form: 48 bits of Unix milliseconds, the version (7), 12 random
    bits, the variant (0b10), 62 random bits (RFC 9562, section 5.7)."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    rand_a = rand >> (80 - _RAND_A_BITS)
    rand_b = rand & ((1 << _RAND_B_BITS) - 1)
    value = (ms & ((1 << _MS_BITS) - 1)) << 80
    value |= 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


__all__ = ["uuid7"]
