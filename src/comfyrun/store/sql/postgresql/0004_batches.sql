-- Batches: many jobs of one workflow template, followed as one.
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

ALTER TABLE jobs ADD COLUMN batch_id TEXT;
-- counts by status and "is any job still open" without visiting the jobs
CREATE INDEX jobs_batch_status ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;
-- a batch's jobs in item order, paged
CREATE INDEX jobs_batch_order ON jobs (batch_id, created_at, id) WHERE batch_id IS NOT NULL;
