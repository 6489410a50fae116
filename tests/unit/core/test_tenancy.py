"""Keys and quotas without I/O."""

from __future__ import annotations

from comfyrun.core.tenancy import (
    ADMIN,
    QUEUED_RETRY_AFTER_S,
    Principal,
    Quota,
    Scope,
    hash_key,
    mint_key,
    quota_retry_after,
)

T0 = 1_700_000_000.0


def test_minted_keys_are_random_and_only_their_hash_is_kept() -> None:
    a_id, a_key, a_hash = mint_key()
    b_id, b_key, _ = mint_key()
    assert a_id != b_id and a_key != b_key
    assert a_key.startswith("crk_") and len(a_key) > 40
    assert a_hash == hash_key(a_key) and a_key not in a_hash and len(a_hash) == 64


def test_principals_scope_owners_but_not_admins() -> None:
    tenant = Principal(name="t", scopes=frozenset({Scope.READ}), key_id="key_1")
    assert tenant.owner == "key_1" and not tenant.admin
    assert tenant.may(Scope.READ) and not tenant.may(Scope.SUBMIT)
    keyed_admin = Principal(name="ops", scopes=frozenset({Scope.ADMIN}), key_id="key_2")
    assert keyed_admin.owner is None and keyed_admin.may(Scope.SUBMIT)
    assert ADMIN.owner is None


def test_quota_verdicts() -> None:
    def wait(
        quota: Quota, unfinished: int = 0, recent: int = 0, oldest: float | None = None
    ) -> int | None:
        return quota_retry_after(
            quota, unfinished=unfinished, recent=recent, oldest_recent_at=oldest, now=T0
        )

    assert wait(Quota()) is None
    assert wait(Quota(max_queued=2), unfinished=1) is None
    assert wait(Quota(max_queued=2), unfinished=2) == QUEUED_RETRY_AFTER_S
    assert wait(Quota(per_minute=3), recent=2, oldest=T0 - 10) is None
    assert wait(Quota(per_minute=3), recent=3, oldest=T0 - 10) == 50
    assert wait(Quota(per_minute=3), recent=3, oldest=T0 - 59.9) == 1
    assert wait(Quota(max_queued=0, per_minute=0), oldest=None) == 60
    # counted by another node whose clock runs a moment ahead: still at most one window
    assert wait(Quota(per_minute=3), recent=3, oldest=T0 + 0.004) == 60
