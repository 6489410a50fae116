"""Idempotency keys: the one rule every store applies when a keyed request arrives again."""

from __future__ import annotations

import enum

from comfyrun.core.job import NewJob

#: How long an Idempotency-Key is remembered.
IDEMPOTENCY_TTL_S = 24 * 3600.0


class KeyVerdict(enum.Enum):
    NEW = "new"  # unknown or expired key: create a job and (re)bind the key to it
    SAME = "same"  # same key, same request: answer with the job it made
    REUSED = "reused"  # same key, other request: refuse (IdempotencyKeyReuse)


def key_scope(new: NewJob) -> str:
    """Keys are scoped per owner, so two tenants cannot collide (or probe each other)."""
    return new.owner or ""


def verdict(
    *, stored_hash: str | None, stored_at: float | None, request_hash: str | None, now: float
) -> KeyVerdict:
    if stored_at is None or stored_at <= now - IDEMPOTENCY_TTL_S:
        return KeyVerdict.NEW
    return KeyVerdict.SAME if stored_hash == request_hash else KeyVerdict.REUSED


__all__ = ["IDEMPOTENCY_TTL_S", "KeyVerdict", "key_scope", "verdict"]
