-- Job types (comfyrun.handlers): a job names the handler that runs it ("comfy": a ComfyUI
-- workflow) and carries that handler's params. A worker claims only the types it serves: the
-- type is the claim index's last column, so the claim filters on it without reading the table.
ALTER TABLE jobs ADD COLUMN type TEXT NOT NULL DEFAULT 'comfy';
ALTER TABLE jobs ADD COLUMN params TEXT NOT NULL DEFAULT '{}';
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (priority DESC, fair_tag, created_at, id, next_run_at, type)
    WHERE status = 'queued';

-- Which job types each live worker serves (refreshed on its heartbeat): a submission of a
-- type no live worker serves is refused.
CREATE TABLE workers (
    id      TEXT PRIMARY KEY,
    types   TEXT NOT NULL DEFAULT '[]',
    seen_at REAL NOT NULL
);
