-- Claim order within one priority and fair tag is rank_at, not created_at: the submission time
-- less the head start a job estimated to run longer gets (comfyrun.core.queue_order). Jobs
-- queued before this migration rank at their submission time (first come first served).
ALTER TABLE jobs ADD COLUMN rank_at REAL NOT NULL DEFAULT 0;
UPDATE jobs SET rank_at = created_at;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (priority DESC, fair_tag, rank_at, id, next_run_at)
    WHERE status = 'queued';
