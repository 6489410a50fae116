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
    h = f"{value:032x}"  # the canonical form, as str(uuid.UUID(int=value)), in a third the time
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


#: The longest id a client may give its job (ComfyUI's prompt_id; a UUID has 36 characters).
MAX_CHOSEN_ID_CHARS = 256


def chosen_id_problem(job_id: str) -> str | None:
    """Why `job_id`, chosen by a client (ComfyUI's POST /prompt takes any prompt_id), cannot
    name a job; None when it can. A job's id is a segment of URL paths (/history/{id},
    /api/v2/jobs/{id}) and of its outputs' keys: an empty or blank one, one with a slash (no
    path can name it: a job no request could read, cancel or delete), a control character,
    or "." / "..", cannot."""
    if not job_id.strip():
        return "prompt_id must not be empty"
    if len(job_id) > MAX_CHOSEN_ID_CHARS:
        return f"prompt_id has more than {MAX_CHOSEN_ID_CHARS} characters"
    if "/" in job_id or job_id in (".", ".."):
        return "prompt_id must not hold a slash or be . or .."
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in job_id):
        return "prompt_id must not hold control characters"
    return None


__all__ = ["MAX_CHOSEN_ID_CHARS", "chosen_id_problem", "uuid7"]
