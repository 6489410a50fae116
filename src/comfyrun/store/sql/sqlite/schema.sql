-- The schema the migrations produce (tests/integration/store/test_migrations.py checks it).

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    inputs           TEXT NOT NULL DEFAULT '[]',
    options          TEXT NOT NULL DEFAULT '{}',
    metadata         TEXT NOT NULL DEFAULT '{}',
    owner            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL DEFAULT 0,
    retry_delay_s    REAL NOT NULL DEFAULT 2.0,
    timeout_s        REAL,
    idempotency_key  TEXT,
    request_hash     TEXT,
    created_at       REAL NOT NULL,
    next_run_at      REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    expires_at       REAL,
    worker_id        TEXT,
    lease_expires_at REAL,
    backend          TEXT,
    prompt_id        TEXT,
    progress         TEXT,
    outputs          TEXT NOT NULL DEFAULT '[]',
    error            TEXT
, batch_id TEXT, fair_key TEXT NOT NULL DEFAULT '', fair_tag REAL NOT NULL DEFAULT 0, execution_started_at REAL, type TEXT NOT NULL DEFAULT 'comfy', params TEXT NOT NULL DEFAULT '{}', rank_at REAL NOT NULL DEFAULT 0);
-- (SQLite keeps ALTER TABLE ADD COLUMN in the table's text: batch_id from 0004, fair_* from 0005,
-- execution_started_at from 0007, type and params from 0008, rank_at from 0009; workflow, in
-- the first, moved to job_workflows by 0014)

-- Claim order over queued jobs only: claim latency does not grow with finished history.
-- fair_tag: round-robin between batches/owners at equal priority (comfyrun.core.batch);
-- rank_at: FIFO or longest first within one tag (comfyrun.core.queue_order).
CREATE INDEX jobs_claim ON jobs (priority DESC, fair_tag, rank_at, id, next_run_at)
    WHERE status = 'queued';
-- Per job type, for the claims of handler types (a worker claims only the types it serves):
-- in claim order, as a handler job ranks at its submission (rank_at = created_at).
CREATE INDEX jobs_claim_type ON jobs (type, priority DESC, fair_tag, created_at, id, next_run_at)
    WHERE status = 'queued';
CREATE INDEX jobs_fair ON jobs (fair_key, priority, fair_tag) WHERE status = 'queued';
-- Queued jobs waiting for their next_run_at (a retry's backoff): counted without a walk.
CREATE INDEX jobs_waiting ON jobs (next_run_at) WHERE status = 'queued';
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
CREATE INDEX jobs_comfy_client ON jobs (json_extract(metadata, '$.comfy_client_id'))
    WHERE status IN ('queued', 'running', 'canceling');

-- AUTOINCREMENT: event ids never go back, even after the newest events are deleted.
CREATE TABLE job_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    request_hash TEXT,
    created_at   REAL NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    workflow    TEXT NOT NULL,
    version     TEXT NOT NULL,
    status      TEXT NOT NULL,
    total       INTEGER NOT NULL,
    options     TEXT NOT NULL DEFAULT '{}',
    metadata    TEXT NOT NULL DEFAULT '{}',
    owner       TEXT,
    created_at  REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX batches_open ON batches (created_at) WHERE status IN ('running', 'canceling');

-- One row per backend: its node definitions and model lists (object_info etc.) as JSON text.
CREATE TABLE backend_catalogs (
    backend         TEXT PRIMARY KEY,
    comfyui_version TEXT,
    fetched_at      REAL NOT NULL,
    object_info     TEXT NOT NULL,
    models          TEXT NOT NULL DEFAULT '{}',
    embeddings      TEXT NOT NULL DEFAULT '[]',
    features        TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    key_hash       TEXT NOT NULL UNIQUE,
    scopes         TEXT NOT NULL DEFAULT '[]',
    max_queued     INTEGER,
    per_minute     INTEGER,
    created_at     REAL NOT NULL,
    revoked_at     REAL,
    jobs_submitted INTEGER NOT NULL DEFAULT 0,
    unfinished     INTEGER NOT NULL DEFAULT 0,
    gpu_seconds    REAL NOT NULL DEFAULT 0
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
    created_at       REAL NOT NULL,
    next_attempt_at  REAL NOT NULL,
    lease_holder     TEXT,
    lease_expires_at REAL,
    attempts         TEXT NOT NULL DEFAULT '[]',
    delivered_at     REAL,
    payload          TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_outbox_job ON webhook_outbox (job_id, created_at);

-- Which job types each live worker serves (refreshed on its heartbeat).
CREATE TABLE workers (
    id      TEXT PRIMARY KEY,
    types   TEXT NOT NULL DEFAULT '[]',
    seen_at REAL NOT NULL
);

-- The jobs per owner and status, kept by triggers as jobs are inserted, change status or owner,
-- and are deleted: JobStore.counts reads these few rows instead of counting every job (93 ms
-- for a million on the store's one thread, which every other call waits behind; /metrics,
-- /api/v2/stats and RunPod's /health each count). owner '' stands for no owner (a key's id is
-- never empty).
CREATE TABLE job_counts (
    owner  TEXT NOT NULL,
    status TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (owner, status)
) WITHOUT ROWID;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_counts (owner, status, n) VALUES (coalesce(NEW.owner, ''), NEW.status, 1)
    ON CONFLICT (owner, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE owner = coalesce(OLD.owner, '') AND status = OLD.status;
END;

CREATE TRIGGER jobs_counted_update AFTER UPDATE OF status, owner ON jobs
WHEN OLD.status IS NOT NEW.status OR OLD.owner IS NOT NEW.owner
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE owner = coalesce(OLD.owner, '') AND status = OLD.status;
    INSERT INTO job_counts (owner, status, n) VALUES (coalesce(NEW.owner, ''), NEW.status, 1)
    ON CONFLICT (owner, status) DO UPDATE SET n = n + 1;
END;

-- A job's workflow, written once at its enqueue: not rewritten with the job's row at each of
-- its status changes (SQLite rewrites a whole row, its overflow pages included, at an UPDATE).
CREATE TABLE job_workflows (
    job_id   TEXT PRIMARY KEY,
    workflow TEXT NOT NULL
);
CREATE TRIGGER jobs_workflow_delete AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_workflows WHERE job_id = OLD.id;
END;
