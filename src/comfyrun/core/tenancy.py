"""API keys as tenants: who a caller is, what it may do and how much it may queue. Pure data
and rules, no I/O.

A key is shown once, when minted; the store keeps only its sha256. Each key is an owner: the
jobs it submits carry its id and only it (and admin keys) can see them. A quota bounds a key's
unfinished jobs (`max_queued`: queued or running, a counter the store keeps with the jobs) and
its submissions in any 60 s (`per_minute`); stores check it in the enqueue's own transaction.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field

#: How far back `per_minute` counts submissions.
QUOTA_WINDOW_S = 60.0
#: Retry-After for a key at its max_queued bound (a job must finish first; no exact time).
QUEUED_RETRY_AFTER_S = 5


class Scope(enum.StrEnum):
    SUBMIT = "submit"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Quota:
    """None: no bound."""

    max_queued: int | None = None
    per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never the key itself). Usage counters are kept by the store."""

    id: str
    name: str
    key_hash: str
    scopes: frozenset[Scope]
    quota: Quota = field(default_factory=Quota)
    created_at: float = 0.0
    revoked_at: float | None = None
    jobs_submitted: int = 0
    gpu_seconds: float = 0.0
    unfinished: int = 0  # its queued or running jobs now

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. `owner` None: an admin, who sees every owner's things."""

    name: str
    scopes: frozenset[Scope]
    key_id: str | None = None

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def owner(self) -> str | None:
        """The owner a request is scoped to (None: unscoped)."""
        return None if self.admin else self.key_id

    def may(self, scope: Scope) -> bool:
        return self.admin or scope in self.scopes


#: The caller on a server without keys, and a config (admin) key.
ADMIN = Principal(name="admin", scopes=frozenset(Scope))


def mint_key() -> tuple[str, str, str]:
    """(key id, the key, its hash). The key is `crk_<random>`; only the hash is stored."""
    key_id = "key_" + uuid.uuid4().hex[:16]
    key = "crk_" + secrets.token_urlsafe(32)
    return key_id, key, hash_key(key)


def hash_key(key: str) -> str:
    """What the store keeps of a key (a random 256-bit token needs no slow hash)."""
    return hashlib.sha256(key.encode()).hexdigest()


def quota_retry_after(
    quota: Quota,
    *,
    unfinished: int,
    recent: int,
    oldest_recent_at: float | None,
    now: float,
) -> int | None:
    """Seconds to wait before one more submission fits `quota`, or None if it fits now.

    `unfinished`: the key's queued or running jobs; `recent`: its submissions in the last
    QUOTA_WINDOW_S, the oldest of them at `oldest_recent_at`."""
    waits: list[int] = []
    if quota.max_queued is not None and unfinished >= quota.max_queued:
        waits.append(QUEUED_RETRY_AFTER_S)
    if quota.per_minute is not None and recent >= quota.per_minute:
        frees_at = (oldest_recent_at if oldest_recent_at is not None else now) + QUOTA_WINDOW_S
        # never past one window: a submission counted by another node may carry a clock a
        # moment ahead of this one's `now`
        waits.append(max(1, min(int(QUOTA_WINDOW_S), int(frees_at - now + 0.999))))
    return max(waits) if waits else None


__all__ = [
    "ADMIN",
    "QUEUED_RETRY_AFTER_S",
    "QUOTA_WINDOW_S",
    "ApiKey",
    "Principal",
    "Quota",
    "Scope",
    "hash_key",
    "mint_key",
    "quota_retry_after",
]
