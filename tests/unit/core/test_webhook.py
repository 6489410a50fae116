"""The webhook rules without I/O: which statuses owe a delivery, backoff and give-up, and
signatures the standardwebhooks package verifies."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from comfyrun.core import webhook
from comfyrun.core.job import Job, JobStatus

T0 = 1_700_000_000.0


def job(status: JobStatus, **hook: str) -> Job:
    options = {"webhook": hook} if hook else {}
    return Job(id="j1", workflow={}, status=status, options=options)


def test_final_statuses_owe_their_event_and_others_none() -> None:
    for status, event in webhook.EVENTS.items():
        d = webhook.delivery_for(job(status, url="https://h/x", secret="s"), T0)
        assert d is not None
        assert (d.event, d.url, d.secret, d.next_attempt_at) == (event, "https://h/x", "s", T0)
        assert d.id.startswith("msg_")
    assert webhook.delivery_for(job(JobStatus.RUNNING, url="https://h/x"), T0) is None
    assert webhook.delivery_for(job(JobStatus.EXPIRED, url="https://h/x"), T0) is None
    assert webhook.delivery_for(job(JobStatus.SUCCEEDED), T0) is None
    first = webhook.delivery_for(job(JobStatus.FAILED, url="https://h/x"), T0)
    second = webhook.delivery_for(job(JobStatus.FAILED, url="https://h/x"), T0)
    assert first is not None and second is not None and first.id != second.id


def test_backoff_doubles_up_to_the_cap_and_gives_up_at_max_age() -> None:
    assert [webhook.backoff_s(n, base_s=1, cap_s=10) for n in range(1, 7)] == [
        1,
        2,
        4,
        8,
        10,
        10,
    ]
    d = webhook.delivery_for(job(JobStatus.SUCCEEDED, url="https://h/x"), T0)
    assert d is not None
    rules = {"base_s": 60.0, "cap_s": 3600.0, "max_age_s": 24 * 3600.0}
    assert webhook.next_attempt_at(d, 1, T0, **rules) == T0 + 60
    assert webhook.next_attempt_at(d, 20, T0 + 23 * 3600, **rules) == T0 + 24 * 3600
    assert webhook.next_attempt_at(d, 20, T0 + 23.5 * 3600, **rules) is None


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(),
        "whsec_" + base64.b64encode(b"short").decode().rstrip("="),  # unpadded, as some issue
    ],
)
def test_signatures_verify_with_the_standardwebhooks_package(secret: str) -> None:
    d = webhook.delivery_for(job(JobStatus.SUCCEEDED, url="https://h/x"), T0)
    assert d is not None
    body = b'{"type":"job.succeeded","data":{"id":"j1"}}'
    ts = int(time.time())
    headers = webhook.headers(d, secret, ts, body)
    assert headers["webhook-id"] == d.id and headers["webhook-timestamp"] == str(ts)
    assert Webhook(secret).verify(body, headers) == {"type": "job.succeeded", "data": {"id": "j1"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_no_secret_no_signature_and_plain_secrets_sign_their_bytes() -> None:
    d = webhook.delivery_for(job(JobStatus.SUCCEEDED, url="https://h/x"), T0)
    assert d is not None
    assert "webhook-signature" not in webhook.headers(d, None, 1, b"{}")
    assert webhook.secret_bytes("plain-secret") == b"plain-secret"
    assert webhook.sign("plain", "m", 1, b"x") != webhook.sign("other", "m", 1, b"x")
