-- Job types (comfyrun.handlers): a job names the handler that runs it ("comfy": a ComfyUI
-- workflow) and carries that handler's params. A worker claims only the types it serves: a
-- handler type's queue is a range of the type-led claim index, in claim order (a handler job
-- ranks at its submission), so a deep queue of comfy jobs costs its claims nothing; a claim
-- for several types takes the best of their heads.
ALTER TABLE jobs ADD COLUMN type TEXT NOT NULL DEFAULT 'comfy';
ALTER TABLE jobs ADD COLUMN params TEXT NOT NULL DEFAULT '{}';
CREATE INDEX jobs_claim_type ON jobs (type, priority DESC, fair_tag, created_at, id, next_run_at)
    WHERE status = 'queued';

-- Which job types each live worker serves (refreshed on its heartbeat): a submission of a
-- type no live worker serves is refused.
CREATE TABLE workers (
    id      TEXT PRIMARY KEY,
    types   TEXT NOT NULL DEFAULT '[]',
    seen_at REAL NOT NULL
);
