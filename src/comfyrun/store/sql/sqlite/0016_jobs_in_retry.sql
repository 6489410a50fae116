-- Unfinished jobs in retry (store.retrying: RunPod's GET /health counts them as jobs.retried): a
-- queued job whose attempt failed or was lost, or one running again. Counted from this small
-- partial index, not by a walk of every queued job on each /health (a deep queue made it the
-- route's whole cost).
CREATE INDEX jobs_in_retry ON jobs (owner)
    WHERE (status = 'queued' AND attempts >= 1) OR (status IN ('running', 'canceling') AND attempts >= 2);
