-- API keys (each one an owner, with scopes, a quota and usage counters) and the durable
-- webhook outbox (one row per event owed, written with the job's final status).
CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    key_hash       TEXT NOT NULL UNIQUE,
    scopes         JSONB NOT NULL DEFAULT '[]',
    max_queued     INTEGER,
    per_minute     INTEGER,
    created_at     DOUBLE PRECISION NOT NULL,
    revoked_at     DOUBLE PRECISION,
    jobs_submitted INTEGER NOT NULL DEFAULT 0,
    unfinished     INTEGER NOT NULL DEFAULT 0,
    gpu_seconds    DOUBLE PRECISION NOT NULL DEFAULT 0
);

-- A key's jobs newest first: its listing, and the submissions its per_minute counts.
CREATE INDEX jobs_owner_newest ON jobs (owner, created_at DESC, id DESC) WHERE owner IS NOT NULL;

CREATE TABLE webhook_outbox (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL,
    event            TEXT NOT NULL,
    url              TEXT NOT NULL,
    secret           TEXT,
    state            TEXT NOT NULL DEFAULT 'pending',
    created_at       DOUBLE PRECISION NOT NULL,
    next_attempt_at  DOUBLE PRECISION NOT NULL,
    lease_holder     TEXT,
    lease_expires_at DOUBLE PRECISION,
    attempts         JSONB NOT NULL DEFAULT '[]',
    delivered_at     DOUBLE PRECISION,
    payload          TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_outbox_job ON webhook_outbox (job_id, created_at);
