-- Queued jobs waiting for their next_run_at (a retry's backoff), found without walking the
-- queue: a queued job's position at the back of a deep queue is then the queued jobs
-- (job_counts) less those waiting and those behind it, not a walk of the claim index.
CREATE INDEX jobs_waiting ON jobs (next_run_at) WHERE status = 'queued';
