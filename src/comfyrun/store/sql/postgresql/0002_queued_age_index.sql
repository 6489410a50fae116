-- oldest_queued_at() (queue age, a health signal) without scanning every queued job.
CREATE INDEX jobs_queued_age ON jobs (created_at) WHERE status = 'queued';
