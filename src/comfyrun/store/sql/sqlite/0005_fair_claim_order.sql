-- Fairness at equal priority: claim order is (priority, fair_tag, created_at, id), where a
-- job's fair_tag is its group's virtual start tag (see comfyrun.core.batch).
ALTER TABLE jobs ADD COLUMN fair_key TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN fair_tag REAL NOT NULL DEFAULT 0;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (priority DESC, fair_tag, created_at, id, next_run_at)
    WHERE status = 'queued';
-- a group's last queued tag
CREATE INDEX jobs_fair ON jobs (fair_key, priority, fair_tag) WHERE status = 'queued';
