-- The claim index also carries next_run_at, so queue_position() counts the jobs ahead of one
-- from the index alone (and only those: the count stops where the job sits).
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (priority DESC, created_at, id, next_run_at)
    WHERE status = 'queued';
