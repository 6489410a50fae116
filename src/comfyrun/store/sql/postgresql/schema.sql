-- The schema the migrations produce (tests/integration/store/test_migrations.py checks it).

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    workflow         JSONB NOT NULL,
    inputs           JSONB NOT NULL DEFAULT '[]',
    options          JSONB NOT NULL DEFAULT '{}',
    metadata         JSONB NOT NULL DEFAULT '{}',
    owner            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL DEFAULT 0,
    retry_delay_s    DOUBLE PRECISION NOT NULL DEFAULT 2.0,
    timeout_s        DOUBLE PRECISION,
    idempotency_key  TEXT,
    request_hash     TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    next_run_at      DOUBLE PRECISION NOT NULL,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION,
    expires_at       DOUBLE PRECISION,
    worker_id        TEXT,
    lease_expires_at DOUBLE PRECISION,
    backend          TEXT,
    prompt_id        TEXT,
    progress         JSONB,
    outputs          JSONB NOT NULL DEFAULT '[]',
    error            JSONB,
    batch_id         TEXT,
    fair_key         TEXT NOT NULL DEFAULT '',
    fair_tag         DOUBLE PRECISION NOT NULL DEFAULT 0,
    execution_started_at DOUBLE PRECISION,
    type             TEXT NOT NULL DEFAULT 'comfy',
    params           JSONB NOT NULL DEFAULT '{}',
    rank_at          DOUBLE PRECISION NOT NULL DEFAULT 0
);

-- Claim order over queued jobs only: claim latency does not grow with finished history.
-- fair_tag: round-robin between batches/owners at equal priority (comfyrun.core.batch);
-- rank_at: FIFO or longest first within one tag (comfyrun.core.queue_order).
CREATE INDEX jobs_claim ON jobs (priority DESC, fair_tag, rank_at, id) INCLUDE (next_run_at)
    WHERE status = 'queued';
-- Per job type, for the claims of handler types (a worker claims only the types it serves):
-- in claim order, as a handler job ranks at its submission (rank_at = created_at).
CREATE INDEX jobs_claim_type ON jobs (type, priority DESC, fair_tag, created_at, id)
    INCLUDE (next_run_at) WHERE status = 'queued';
CREATE INDEX jobs_fair ON jobs (fair_key, priority, fair_tag) WHERE status = 'queued';
-- Unfinished jobs in retry (store.retrying), counted without a walk of the queue.
CREATE INDEX jobs_in_retry ON jobs (owner)
    WHERE (status = 'queued' AND attempts >= 1) OR (status IN ('running', 'canceling') AND attempts >= 2);
CREATE INDEX jobs_batch_status ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_batch_order ON jobs (batch_id, created_at, id) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status IN ('running', 'canceling');
CREATE INDEX jobs_newest ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_status_newest ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_expires ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX jobs_prompt ON jobs (prompt_id) WHERE prompt_id IS NOT NULL;
CREATE INDEX jobs_comfy_client ON jobs ((metadata ->> 'comfy_client_id'))
    WHERE status IN ('queued', 'running', 'canceling');

CREATE TABLE job_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    data       JSONB NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    request_hash TEXT,
    created_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    workflow    TEXT NOT NULL,
    version     TEXT NOT NULL,
    status      TEXT NOT NULL,
    total       INTEGER NOT NULL,
    options     JSONB NOT NULL DEFAULT '{}',
    metadata    JSONB NOT NULL DEFAULT '{}',
    owner       TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION
);
CREATE INDEX batches_open ON batches (created_at) WHERE status IN ('running', 'canceling');

-- One row per backend: its node definitions and model lists (object_info etc.) as JSON text.
-- TEXT, not JSONB: JSONB reorders object keys, and ComfyUI's order of nodes and inputs is kept.
CREATE TABLE backend_catalogs (
    backend         TEXT PRIMARY KEY,
    comfyui_version TEXT,
    fetched_at      DOUBLE PRECISION NOT NULL,
    object_info     TEXT NOT NULL,
    models          TEXT NOT NULL DEFAULT '{}',
    embeddings      TEXT NOT NULL DEFAULT '[]',
    features        TEXT NOT NULL DEFAULT '{}'
);

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
-- A key's jobs counted per status without reading their rows.
CREATE INDEX jobs_owner_status ON jobs (owner, status, created_at) WHERE owner IS NOT NULL;

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

-- Which job types each live worker serves (refreshed on its heartbeat).
CREATE TABLE workers (
    id      TEXT PRIMARY KEY,
    types   JSONB NOT NULL DEFAULT '[]',
    seen_at DOUBLE PRECISION NOT NULL
);
